//! The search space: which config keys vary, over which values, and under which conditions; grid
//! enumeration and seeded random sampling of assignments.
//!
//! A key is a dotted path into the run config (`model.dropout`, `train.learning_rate`). Its values
//! are a list (`[0.1, 0.3]`: every value in a grid, a uniform choice in a random search), or a
//! range for random search: `{ uniform = [a, b] }`, `{ log_uniform = [a, b] }` (uniform in log
//! space, for learning rates), `{ int = [a, b], step = s }`, `{ choice = [...] }`. A key may hold
//! only when other keys have given values: `when = { "model.arch" = "transformer" }`.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use std::collections::BTreeMap;

/// One trial's values: dotted config key → value.
pub type Assignment = BTreeMap<String, toml::Value>;

/// The values a key takes.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Distribution {
    /// Exactly these values (a grid axis, or a uniform choice in random search).
    List(Vec<toml::Value>),
    /// Uniform real numbers in `[low, high]`.
    Uniform {
        /// Lowest value.
        low: f64,
        /// Highest value.
        high: f64,
    },
    /// Real numbers whose logarithm is uniform in `[ln low, ln high]`.
    LogUniform {
        /// Lowest value (> 0).
        low: f64,
        /// Highest value.
        high: f64,
    },
    /// Integers `low, low + step, …` up to `high`.
    Int {
        /// Lowest value.
        low: i64,
        /// Highest value.
        high: i64,
        /// Spacing.
        step: i64,
    },
}

impl Distribution {
    /// The finite values a grid walks through, or `None` for a continuous range.
    pub fn grid_values(&self) -> Option<Vec<toml::Value>> {
        match self {
            Distribution::List(values) => Some(values.clone()),
            Distribution::Int { low, high, step } => Some(
                (0..=(high - low) / step)
                    .map(|k| toml::Value::Integer(low + k * step))
                    .collect(),
            ),
            Distribution::Uniform { .. } | Distribution::LogUniform { .. } => None,
        }
    }

    /// One random value.
    pub fn sample(&self, rng: &mut ChaCha8Rng) -> toml::Value {
        match self {
            Distribution::List(values) => values[rng.random_range(0..values.len())].clone(),
            // Rounding may step past an end: clamped back inside.
            Distribution::Uniform { low, high } => toml::Value::Float(
                round_sig(low + (high - low) * rng.random::<f64>()).clamp(*low, *high),
            ),
            Distribution::LogUniform { low, high } => {
                let (a, b) = (low.ln(), high.ln());
                let x = round_sig((a + (b - a) * rng.random::<f64>()).exp());
                toml::Value::Float(x.clamp(*low, *high))
            }
            Distribution::Int { low, high, step } => {
                let k = rng.random_range(0..=(high - low) / step);
                toml::Value::Integer(low + k * step)
            }
        }
    }

    /// The extreme values, checked against the config before anything trains.
    pub fn extremes(&self) -> Vec<toml::Value> {
        match self {
            Distribution::List(values) => values.clone(),
            Distribution::Uniform { low, high } | Distribution::LogUniform { low, high } => {
                vec![toml::Value::Float(*low), toml::Value::Float(*high)]
            }
            Distribution::Int { low, high, step } => vec![
                toml::Value::Integer(*low),
                toml::Value::Integer(low + (high - low) / step * step),
            ],
        }
    }
}

/// Sampled reals keep 6 significant digits: configs and tables stay readable, and the values are
/// still far finer than any difference training could resolve.
fn round_sig(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let digits = 6 - 1 - x.abs().log10().floor() as i32;
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

/// A key of the search space.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Param {
    /// Dotted config key.
    pub key: String,
    /// Its values.
    pub distribution: Distribution,
    /// Keys (and the values they must have) for this key to be set; empty for every trial.
    pub when: Vec<(String, toml::Value)>,
}

/// The whole space: unconditional keys first, then conditional ones (each in key order).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Space {
    params: Vec<Param>,
}

impl Space {
    /// A space from its keys. Conditions may name only unconditional keys or base-config keys.
    pub fn new(mut params: Vec<Param>) -> Result<Self, String> {
        if params.is_empty() {
            return Err("the [space] is empty: name at least one config key to vary".into());
        }
        params.sort_by(|a, b| (!a.when.is_empty(), &a.key).cmp(&(!b.when.is_empty(), &b.key)));
        for p in &params {
            for (key, _) in &p.when {
                if params.iter().any(|q| &q.key == key && !q.when.is_empty()) {
                    return Err(format!(
                        "the condition of {} names {key}, which is itself conditional; \
                         conditions may name unconditional keys or base-config keys",
                        p.key
                    ));
                }
                if key == &p.key {
                    return Err(format!("{} cannot depend on itself", p.key));
                }
            }
        }
        Ok(Space { params })
    }

    /// The keys, unconditional first.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    fn split(&self) -> (&[Param], &[Param]) {
        let n = self.params.iter().take_while(|p| p.when.is_empty()).count();
        self.params.split_at(n)
    }

    /// Every assignment of a grid, in a fixed order (the last key varies fastest). `lookup`
    /// gives a base-config value for conditions on keys the space does not vary.
    pub fn grid(
        &self,
        lookup: &dyn Fn(&str) -> Option<toml::Value>,
    ) -> Result<Vec<Assignment>, String> {
        let axes = |params: &[Param]| -> Result<Vec<Vec<toml::Value>>, String> {
            params
                .iter()
                .map(|p| {
                    p.distribution.grid_values().ok_or_else(|| {
                        format!(
                            "{} is a continuous range: a grid needs a list of values (or use method = \"random\")",
                            p.key
                        )
                    })
                })
                .collect()
        };
        let (free, conditional) = self.split();
        let free_axes = axes(free)?;
        let conditional_axes = axes(conditional)?;
        let mut out = Vec::new();
        for base in product(free, &free_axes) {
            let active: Vec<usize> = (0..conditional.len())
                .filter(|&i| holds(&conditional[i], &base, lookup))
                .collect();
            let params: Vec<Param> = active.iter().map(|&i| conditional[i].clone()).collect();
            let values: Vec<Vec<toml::Value>> = active
                .iter()
                .map(|&i| conditional_axes[i].clone())
                .collect();
            for extra in product(&params, &values) {
                let mut assignment = base.clone();
                assignment.extend(extra);
                out.push(assignment);
            }
        }
        Ok(out)
    }

    /// The number of grid points, without building them (for the size check).
    pub fn grid_size(&self, lookup: &dyn Fn(&str) -> Option<toml::Value>) -> Result<usize, String> {
        self.grid(lookup).map(|g| g.len())
    }

    /// `count` random assignments from `seed`: the same seed always gives the same trials, and a
    /// larger count extends the same sequence.
    pub fn random(
        &self,
        count: usize,
        seed: u64,
        lookup: &dyn Fn(&str) -> Option<toml::Value>,
    ) -> Vec<Assignment> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (free, conditional) = self.split();
        (0..count)
            .map(|_| {
                let mut assignment: Assignment = free
                    .iter()
                    .map(|p| (p.key.clone(), p.distribution.sample(&mut rng)))
                    .collect();
                for p in conditional {
                    // Drawn whether or not it applies, so one key's condition never shifts the
                    // values of the keys after it.
                    let value = p.distribution.sample(&mut rng);
                    if holds(p, &assignment, lookup) {
                        assignment.insert(p.key.clone(), value);
                    }
                }
                assignment
            })
            .collect()
    }
}

fn holds(
    param: &Param,
    assignment: &Assignment,
    lookup: &dyn Fn(&str) -> Option<toml::Value>,
) -> bool {
    param.when.iter().all(|(key, want)| {
        let value = assignment.get(key).cloned().or_else(|| lookup(key));
        value.as_ref() == Some(want)
    })
}

/// The Cartesian product of the axes, as assignments (the last axis varies fastest).
fn product(params: &[Param], axes: &[Vec<toml::Value>]) -> Vec<Assignment> {
    let mut out = vec![Assignment::new()];
    for (param, values) in params.iter().zip(axes) {
        out = out
            .into_iter()
            .flat_map(|a| {
                values.iter().map(move |v| {
                    let mut a = a.clone();
                    a.insert(param.key.clone(), v.clone());
                    a
                })
            })
            .collect();
    }
    out
}

/// Reads the `[space]` table: nested tables are paths (`[space.model] dropout = [..]` is
/// `model.dropout`), arrays are lists, inline tables with a distribution key are ranges.
pub fn parse_space(table: &toml::Table) -> Result<Vec<Param>, String> {
    let mut out = Vec::new();
    walk(table, "", &mut out)?;
    Ok(out)
}

/// `prefix.name`, or `name` at the top.
fn join_key(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

const SPEC_KEYS: [&str; 4] = ["uniform", "log_uniform", "int", "choice"];

fn walk(table: &toml::Table, prefix: &str, out: &mut Vec<Param>) -> Result<(), String> {
    for (name, value) in table {
        let key = join_key(prefix, name);
        match value {
            toml::Value::Array(values) => out.push(Param {
                distribution: list(&key, values)?,
                key,
                when: Vec::new(),
            }),
            toml::Value::Table(t) if t.keys().any(|k| SPEC_KEYS.contains(&k.as_str())) => {
                out.push(param(&key, t)?)
            }
            toml::Value::Table(t) if t.contains_key("when") => {
                return Err(format!(
                    "{key} has a condition but no values: give uniform, log_uniform, int or choice"
                ));
            }
            toml::Value::Table(t) => walk(t, &key, out)?,
            other => {
                return Err(format!(
                    "{key} = {other} is a single value: a swept key needs a list (or a range); \
                     set fixed values in the base config"
                ));
            }
        }
    }
    Ok(())
}

fn list(key: &str, values: &[toml::Value]) -> Result<Distribution, String> {
    if values.is_empty() {
        return Err(format!("{key} has an empty list of values"));
    }
    let mut seen: Vec<&toml::Value> = Vec::new();
    for v in values {
        if seen.contains(&v) {
            return Err(format!("{key} lists {v} twice"));
        }
        seen.push(v);
    }
    Ok(Distribution::List(values.to_vec()))
}

fn pair_f64(key: &str, name: &str, value: &toml::Value) -> Result<(f64, f64), String> {
    let bad = || format!("{key}: {name} needs two numbers [low, high], not {value}");
    let arr = value.as_array().ok_or_else(bad)?;
    let num = |v: &toml::Value| v.as_float().or_else(|| v.as_integer().map(|i| i as f64));
    match arr.as_slice() {
        [a, b] => {
            let (low, high) = (num(a).ok_or_else(bad)?, num(b).ok_or_else(bad)?);
            if !(low.is_finite() && high.is_finite() && low < high) {
                return Err(format!(
                    "{key}: {name} = [{low}, {high}] needs finite bounds with low < high"
                ));
            }
            Ok((low, high))
        }
        _ => Err(bad()),
    }
}

fn param(key: &str, t: &toml::Table) -> Result<Param, String> {
    let kinds: Vec<&String> = t
        .keys()
        .filter(|k| SPEC_KEYS.contains(&k.as_str()))
        .collect();
    if kinds.len() > 1 {
        return Err(format!(
            "{key} gives both {} and {}: choose one",
            kinds[0], kinds[1]
        ));
    }
    for k in t.keys() {
        if !SPEC_KEYS.contains(&k.as_str()) && k != "when" && k != "step" {
            return Err(format!(
                "{key}: unknown range key \"{k}\" (expected uniform, log_uniform, int, choice, step, when)"
            ));
        }
    }
    let kind = kinds[0].as_str();
    if t.contains_key("step") && kind != "int" {
        return Err(format!("{key}: step belongs to int ranges"));
    }
    let distribution = match kind {
        "uniform" => {
            let (low, high) = pair_f64(key, kind, &t[kind])?;
            Distribution::Uniform { low, high }
        }
        "log_uniform" => {
            let (low, high) = pair_f64(key, kind, &t[kind])?;
            if low <= 0.0 {
                return Err(format!(
                    "{key}: log_uniform needs positive bounds, not [{low}, {high}]"
                ));
            }
            Distribution::LogUniform { low, high }
        }
        "int" => {
            let bad = || format!("{key}: int needs two integers [low, high], not {}", t[kind]);
            let arr = t[kind].as_array().ok_or_else(bad)?;
            let (low, high) = match arr.as_slice() {
                [a, b] => (
                    a.as_integer().ok_or_else(bad)?,
                    b.as_integer().ok_or_else(bad)?,
                ),
                _ => return Err(bad()),
            };
            let step = match t.get("step") {
                None => 1,
                Some(s) => s
                    .as_integer()
                    .filter(|&s| s > 0)
                    .ok_or_else(|| format!("{key}: step must be a positive integer, not {s}"))?,
            };
            if low > high {
                return Err(format!("{key}: int = [{low}, {high}] needs low ≤ high"));
            }
            // Counted in i128: no overflow at extreme bounds; a range this long is a mistake.
            if (high as i128 - low as i128) / step as i128 >= 1_000_000 {
                return Err(format!(
                    "{key}: int = [{low}, {high}] with step {step} has over a million values"
                ));
            }
            Distribution::Int { low, high, step }
        }
        _ => {
            let values = t[kind]
                .as_array()
                .ok_or_else(|| format!("{key}: choice needs a list of values"))?;
            list(key, values)?
        }
    };
    let mut when = Vec::new();
    if let Some(cond) = t.get("when") {
        let table = cond.as_table().ok_or_else(|| {
            format!("{key}: when needs a table of keys and values, e.g. {{ \"model.arch\" = \"transformer\" }}")
        })?;
        flatten(table, "", &mut when);
        if when.is_empty() {
            return Err(format!("{key}: when is empty"));
        }
    }
    Ok(Param {
        key: key.to_owned(),
        distribution,
        when,
    })
}

fn flatten(table: &toml::Table, prefix: &str, out: &mut Vec<(String, toml::Value)>) {
    for (name, value) in table {
        let key = join_key(prefix, name);
        match value {
            toml::Value::Table(t) => flatten(t, &key, out),
            v => out.push((key, v.clone())),
        }
    }
}

/// Sets a dotted key in a TOML table, creating tables on the way.
pub fn set_key(table: &mut toml::Table, key: &str, value: toml::Value) -> Result<(), String> {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().unwrap_or(key);
    let mut current = table;
    for (i, part) in parts.iter().enumerate() {
        let entry = current
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry.as_table_mut().ok_or_else(|| {
            format!(
                "{key}: {} is a value in the base config, not a table",
                parts[..=i].join(".")
            )
        })?;
    }
    current.insert(last.to_owned(), value);
    Ok(())
}

/// Reads a dotted key from a TOML table.
pub fn get_key(table: &toml::Table, key: &str) -> Option<toml::Value> {
    let mut parts = key.split('.').peekable();
    let mut current = table;
    while let Some(part) = parts.next() {
        let value = current.get(part)?;
        if parts.peek().is_none() {
            return Some(value.clone());
        }
        current = value.as_table()?;
    }
    None
}

/// `key = value` pairs of an assignment, for messages and tables.
pub fn describe(assignment: &Assignment) -> String {
    assignment
        .iter()
        .map(|(k, v)| format!("{k} = {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space(text: &str) -> Space {
        let table: toml::Table = toml::from_str(text).unwrap();
        Space::new(parse_space(&table).unwrap()).unwrap()
    }

    fn none(_: &str) -> Option<toml::Value> {
        None
    }

    #[test]
    fn nested_tables_and_quoted_dotted_keys_are_the_same_paths() {
        let a = space("model.dropout = [0.1, 0.2]\n[train]\nlearning_rate = [1e-3]\n");
        let b = space("\"model.dropout\" = [0.1, 0.2]\n\"train.learning_rate\" = [1e-3]\n");
        let keys = |s: &Space| s.params().iter().map(|p| p.key.clone()).collect::<Vec<_>>();
        assert_eq!(keys(&a), ["model.dropout", "train.learning_rate"]);
        assert_eq!(keys(&b), keys(&a));
    }

    #[test]
    fn rounding_keeps_six_significant_digits() {
        assert_eq!(round_sig(0.000_123_456_789), 0.000_123_457);
        assert_eq!(round_sig(123.456_789_1), 123.457);
    }

    #[test]
    fn bad_ranges_are_explained() {
        let err = |text: &str| {
            let table: toml::Table = toml::from_str(text).unwrap();
            parse_space(&table).unwrap_err()
        };
        assert!(err("a = []").contains("empty list"));
        assert!(err("a = 3").contains("single value"));
        assert!(err("a = { uniform = [2, 1] }").contains("low < high"));
        assert!(err("a = { log_uniform = [0, 1] }").contains("positive"));
        assert!(err("a = { uniform = [0, 1], int = [0, 1] }").contains("choose one"));
        assert!(err("a = { uniform = [0, 1], stp = 2 }").contains("\"stp\""));
        assert!(err("a = [1, 1]").contains("twice"));
        let table: toml::Table = toml::from_str("").unwrap();
        assert!(
            Space::new(parse_space(&table).unwrap())
                .unwrap_err()
                .contains("empty")
        );
    }

    #[test]
    fn int_ranges_enumerate_in_grids() {
        let s = space("a = { int = [1, 7], step = 3 }");
        let grid = s.grid(&none).unwrap();
        let values: Vec<i64> = grid.iter().map(|a| a["a"].as_integer().unwrap()).collect();
        assert_eq!(values, [1, 4, 7]);
    }
}
