//! Date normalization: human-written dates in English and German, in a dozen formats, mapped to
//! ISO 8601 (`"Tuesday, 3 March 2021"`, `"3. März 2021"`, `"03.03.21"` → `"2021-03-03"`).
//!
//! The task needs attention: the output reorders the input (year first), and the month must be read
//! from a name in either language. Numeric formats are day-first (European) throughout, and
//! two-digit years are read in the window 1950–2049, so every input has exactly one answer.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashSet;

const MONTHS_EN: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const MONTHS_DE: [&str; 12] = [
    "Januar",
    "Februar",
    "März",
    "April",
    "Mai",
    "Juni",
    "Juli",
    "August",
    "September",
    "Oktober",
    "November",
    "Dezember",
];
const DAYS_EN: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const DAYS_DE: [&str; 7] = [
    "Sonntag",
    "Montag",
    "Dienstag",
    "Mittwoch",
    "Donnerstag",
    "Freitag",
    "Samstag",
];

/// A calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Date {
    /// Year, 1950–2049.
    pub year: u32,
    /// Month, 1–12.
    pub month: u32,
    /// Day of the month, 1–31.
    pub day: u32,
}

fn leap(year: u32) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl Date {
    /// Day of the week, 0 = Sunday (Sakamoto's method).
    pub fn weekday(self) -> usize {
        const T: [u32; 12] = [0, 3, 2, 5, 0, 3, 5, 1, 4, 6, 2, 4];
        let y = if self.month < 3 {
            self.year - 1
        } else {
            self.year
        };
        ((y + y / 4 - y / 100 + y / 400 + T[self.month as usize - 1] + self.day) % 7) as usize
    }

    /// ISO 8601: `2021-03-03`.
    pub fn iso(self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }

    /// A uniformly random date in 1950–2049.
    pub fn random(rng: &mut impl Rng) -> Date {
        let year = rng.random_range(1950..2050);
        let month = rng.random_range(1..=12);
        let day = rng.random_range(1..=days_in_month(year, month));
        Date { year, month, day }
    }

    /// The date written in format `format` (0..[`FORMATS`]).
    pub fn write(self, format: usize) -> String {
        let (d, m, y) = (self.day, self.month as usize - 1, self.year);
        let (en, de) = (MONTHS_EN[m], MONTHS_DE[m]);
        let (wd_en, wd_de) = (DAYS_EN[self.weekday()], DAYS_DE[self.weekday()]);
        match format {
            0 => format!("{wd_en}, {d} {en} {y}"),
            1 => format!("{d} {en} {y}"),
            2 => format!("{en} {d}, {y}"),
            3 => format!("{} {d}, {y}", &en[..3]),
            4 => format!("{wd_en}, {} {d}, {y}", &en[..3]),
            5 => format!("{:02}/{:02}/{:02}", d, m + 1, y % 100),
            6 => format!("{wd_de}, {d}. {de} {y}"),
            7 => format!("{d}. {de} {y}"),
            8 => format!("{:02}.{:02}.{y}", d, m + 1),
            9 => format!("{d}.{}.{:02}", m + 1, y % 100),
            10 => format!("am {d}. {de} {y}"),
            _ => format!("the {d}{} of {en} {y}", ordinal_suffix(d)),
        }
    }
}

/// Number of input formats.
pub const FORMATS: usize = 12;

fn ordinal_suffix(d: u32) -> &'static str {
    match (d % 10, d % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    }
}

/// A training set and a disjoint held-out set of (written date, ISO date) pairs.
#[derive(Debug, Clone)]
pub struct DateTask {
    /// Training pairs.
    pub train: Vec<(String, String)>,
    /// Validation pairs (disjoint from training).
    pub valid: Vec<(String, String)>,
    /// Test pairs (disjoint from both).
    pub test: Vec<(String, String)>,
}

impl DateTask {
    /// Generates the task deterministically from a seed.
    pub fn generate(seed: u64, train: usize, valid: usize, test: usize) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut seen = HashSet::new();
        let mut draw = |n: usize, rng: &mut ChaCha8Rng| {
            let mut out = Vec::with_capacity(n);
            while out.len() < n {
                let date = Date::random(rng);
                let written = date.write(rng.random_range(0..FORMATS));
                if seen.insert(written.clone()) {
                    out.push((written, date.iso()));
                }
            }
            out
        };
        // Held-out sets first, so the training set never contains them.
        let test = draw(test, &mut rng);
        let valid = draw(valid, &mut rng);
        let train = draw(train, &mut rng);
        DateTask { train, valid, test }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weekdays_and_formats_are_right() {
        let d = Date {
            year: 2021,
            month: 3,
            day: 3,
        };
        assert_eq!(d.weekday(), 3);
        assert_eq!(d.write(0), "Wednesday, 3 March 2021");
        assert_eq!(d.write(5), "03/03/21");
        assert_eq!(d.write(6), "Mittwoch, 3. März 2021");
        assert_eq!(d.write(9), "3.3.21");
        assert_eq!(d.write(11), "the 3rd of March 2021");
        assert_eq!(d.iso(), "2021-03-03");
        let leap_day = Date {
            year: 2000,
            month: 2,
            day: 29,
        };
        assert_eq!(leap_day.weekday(), 2);
    }

    #[test]
    fn held_out_sets_are_disjoint_from_training() {
        let task = DateTask::generate(7, 2000, 100, 100);
        let train: HashSet<_> = task.train.iter().map(|p| &p.0).collect();
        assert!(task.test.iter().all(|p| !train.contains(&p.0)));
        assert!(task.valid.iter().all(|p| !train.contains(&p.0)));
        assert_eq!(
            DateTask::generate(7, 10, 1, 1).train,
            DateTask::generate(7, 10, 1, 1).train
        );
    }
}
