//! Cooperative games: the interface every perturbation method asks its questions through.
//!
//! A method never runs the model: it asks a [`Game`] for the values of coalitions, in batches,
//! and the game (usually the [`crate::Engine`]) answers them as fast as it can. Values are
//! vectors, one entry per target (the whole answer, each answer token, ...), because Shapley
//! values and their relatives are linear in the value function: every target is attributed from
//! the same model evaluations.

use crate::{AttributionError, Coalition};

/// The value of every coalition of `players()` units, for `dims()` targets.
pub trait Game {
    fn players(&self) -> usize;
    fn dims(&self) -> usize;
    /// Values of `coalitions` (`[coalition][dim]`).
    fn values(&mut self, coalitions: &[Coalition]) -> Result<Vec<Vec<f64>>, AttributionError>;
}

/// A game given by a function (tests, and games computed without a model).
pub struct FnGame<F> {
    players: usize,
    dims: usize,
    f: F,
    /// Coalitions asked for, counting repeats (lets tests check budgets).
    pub queries: usize,
}

impl<F: FnMut(&Coalition) -> Vec<f64>> FnGame<F> {
    pub fn new(players: usize, dims: usize, f: F) -> Self {
        Self {
            players,
            dims,
            f,
            queries: 0,
        }
    }
}

impl<F: FnMut(&Coalition) -> Vec<f64>> Game for FnGame<F> {
    fn players(&self) -> usize {
        self.players
    }

    fn dims(&self) -> usize {
        self.dims
    }

    fn values(&mut self, coalitions: &[Coalition]) -> Result<Vec<Vec<f64>>, AttributionError> {
        self.queries += coalitions.len();
        Ok(coalitions.iter().map(|c| (self.f)(c)).collect())
    }
}
