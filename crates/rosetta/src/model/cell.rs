//! Recurrent cells (LSTM, GRU, Elman tanh RNN) with a single-step API.
//!
//! The input-to-hidden projection is *not* part of the cell: callers project the inputs of all time
//! steps with one matmul (time-major, `[time, batch, in] → [time, batch, gates·hidden]`) and hand
//! the cell one slice per step, so only the hidden-to-hidden product remains inside the time loop.

use crate::kernels::StepLinear;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{sigmoid, tanh};
use serde::{Deserialize, Serialize};

/// The recurrent unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CellKind {
    /// Long short-term memory (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000).
    Lstm,
    /// Gated recurrent unit (Cho et al. 2014, §2.3), in the "reset after" form PyTorch and cuDNN use.
    #[default]
    Gru,
    /// Elman RNN with tanh.
    Rnn,
}

impl CellKind {
    /// Number of gate blocks in the projections: 4 (LSTM), 3 (GRU), 1 (RNN).
    pub fn gates(self) -> usize {
        match self {
            CellKind::Lstm => 4,
            CellKind::Gru => 3,
            CellKind::Rnn => 1,
        }
    }
}

/// PyTorch's recurrent initialization, U(−1/√H, 1/√H), for every projection of a cell of size H.
pub fn recurrent_init(hidden: usize) -> Initializer {
    let k = 1.0 / (hidden as f64).sqrt();
    Initializer::Uniform { min: -k, max: k }
}

/// A projection into the gate space of a cell: `[.., d_in] → [.., gates·hidden]`.
pub fn gate_projection<B: Backend>(
    kind: CellKind,
    d_in: usize,
    hidden: usize,
    bias: bool,
    device: &B::Device,
) -> Linear<B> {
    LinearConfig::new(d_in, kind.gates() * hidden)
        .with_bias(bias)
        .with_initializer(recurrent_init(hidden))
        .init(device)
}

/// The state of one recurrent layer.
#[derive(Debug, Clone)]
pub struct CellState<B: Backend> {
    /// Hidden state `[batch, hidden]`.
    pub h: Tensor<B, 2>,
    /// Memory cell `[batch, hidden]` (LSTM only).
    pub c: Option<Tensor<B, 2>>,
}

impl<B: Backend> CellState<B> {
    /// Keeps `self` where `keep_old` is true (padding steps), takes `new` elsewhere.
    /// `keep_old`: `[batch, hidden]`.
    pub fn keep_where(self, keep_old: &Tensor<B, 2, Bool>, new: CellState<B>) -> CellState<B> {
        CellState {
            h: new.h.mask_where(keep_old.clone(), self.h),
            c: match (self.c, new.c) {
                (Some(old), Some(new)) => Some(new.mask_where(keep_old.clone(), old)),
                (_, c) => c,
            },
        }
    }

    /// Selects rows (batch entries), e.g. to reorder beams. `indices`: `[n]`.
    pub fn select(self, indices: Tensor<B, 1, Int>) -> Self {
        CellState {
            h: self.h.select(0, indices.clone()),
            c: self.c.map(|c| c.select(0, indices)),
        }
    }
}

/// The hidden-to-hidden part of a recurrent cell.
#[derive(Module, Debug)]
pub struct Cell<B: Backend> {
    /// Hidden-to-hidden projection `[hidden, gates·hidden]` with bias.
    pub hh: Linear<B>,
    #[module(skip)]
    kind: CellKind,
    hidden: usize,
}

impl<B: Backend> Cell<B> {
    /// A cell of the given kind and size.
    pub fn new(kind: CellKind, hidden: usize, device: &B::Device) -> Self {
        Cell {
            hh: gate_projection(kind, hidden, hidden, true, device),
            kind,
            hidden,
        }
    }

    /// The cell kind.
    pub fn kind(&self) -> CellKind {
        self.kind
    }

    /// Hidden size.
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// The all-zero initial state for `batch` rows.
    pub fn zero_state(&self, batch: usize, device: &B::Device) -> CellState<B> {
        let zeros = Tensor::zeros([batch, self.hidden], device);
        CellState {
            c: (self.kind == CellKind::Lstm).then(|| zeros.clone()),
            h: zeros,
        }
    }

    /// A state from a given hidden vector; an LSTM's memory cell starts equal to it (as in JoeyNMT).
    pub fn state_from(&self, h: Tensor<B, 2>) -> CellState<B> {
        CellState {
            c: (self.kind == CellKind::Lstm).then(|| h.clone()),
            h,
        }
    }

    /// The cell prepared for one pass over a sequence, whose steps share one hidden-to-hidden
    /// weight gradient ([`StepLinear`]).
    pub fn pass(&self) -> CellPass<B> {
        CellPass {
            hh: StepLinear::new(&self.hh),
            kind: self.kind,
        }
    }
}

/// A [`Cell`] during one pass over a sequence.
#[derive(Debug, Clone)]
pub struct CellPass<B: Backend> {
    hh: StepLinear<B>,
    kind: CellKind,
}

impl<B: Backend> CellPass<B> {
    /// One time step.
    ///
    /// `xp`: the input already projected into gate space, bias included, `[batch, gates·hidden]`.
    /// Returns the new state; `h`: `[batch, hidden]`.
    pub fn step(&self, xp: Tensor<B, 2>, state: &CellState<B>) -> CellState<B> {
        let hp = self.hh.forward(state.h.clone()); // [batch, gates·hidden]
        match self.kind {
            CellKind::Rnn => CellState {
                h: tanh(xp + hp),
                c: None,
            },
            CellKind::Gru => {
                // Cho et al. 2014, eqs. 5–8, in the "reset after" form of PyTorch and cuDNN:
                // r = σ(W_r x + U_r h), z = σ(W_z x + U_z h), n = tanh(W x + r ⊙ (U h + b)),
                // h' = (1 − z) ⊙ n + z ⊙ h (the paper's eq. 8 applies r before U: U (r ⊙ h)).
                // One fused operation on the CPU.
                let h = crate::kernels::gru_gates(xp, hp, state.h.clone());
                CellState { h, c: None }
            }
            CellKind::Lstm => {
                // Gates in PyTorch's order: input, forget, cell candidate, output.
                let gates = xp + hp;
                let mut g = gates.chunk(4, 1);
                let o = sigmoid(g.remove(3));
                let cand = tanh(g.remove(2));
                let f = sigmoid(g.remove(1));
                let i = sigmoid(g.remove(0));
                let c_prev = state
                    .c
                    .clone()
                    .unwrap_or_else(|| Tensor::zeros(state.h.dims(), &state.h.device()));
                let c = f * c_prev + i * cand;
                let h = o * tanh(c.clone());
                CellState { h, c: Some(c) }
            }
        }
    }
}
