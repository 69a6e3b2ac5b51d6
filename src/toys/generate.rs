//! Toy datasets drawn from the model at a parameter point, as pyhf samples them: main counts
//! from Poisson(expected rates), auxiliary data from each constraint (Normal(theta, sigma) for
//! Gaussian constraints, Poisson(gamma * tau) for shapesys).
//!
//! Positions in a toy's stream: main bin `b` uses word `b`; Gaussian constraint `j` (in the
//! layout's order) uses words `n_bins + 2j` and `n_bins + 2j + 1`; Poisson constraint `j` uses
//! word `n_bins + 2 n_gauss + j`.

use super::poisson::{normal_from_uniforms, PoissonTable};
use super::rng::ToyStream;
use crate::cpu::Evaluator;
use crate::model::{Dataset, Model};
use crate::{Error, Result};

/// Draws toys of one ensemble: tables built once from the generating parameters.
#[derive(Debug, Clone)]
pub struct ToyGenerator<'m> {
    model: &'m Model,
    /// Parameters the toys are drawn at.
    pub gen_pars: Vec<f64>,
    /// Expected main rates at `gen_pars`.
    pub expected: Vec<f64>,
    pub(crate) main: Vec<PoissonTable>,
    /// Per Gaussian constraint: (aux index, centre, sigma).
    pub(crate) gauss: Vec<(usize, f64, f64)>,
    /// Per Poisson constraint: (aux index, table of Poisson(gamma * tau)).
    pub(crate) poisson: Vec<(usize, PoissonTable)>,
}

impl<'m> ToyGenerator<'m> {
    pub fn new(model: &'m Model, gen_pars: &[f64]) -> Result<Self> {
        let mut expected = vec![0.0; model.n_bins()];
        Evaluator::new(model).expected_main(gen_pars, &mut expected);
        if let Some((b, &r)) = expected
            .iter()
            .enumerate()
            .find(|(_, r)| !(r.is_finite() && **r >= 0.0))
        {
            let ch = model
                .channels
                .iter()
                .find(|c| b >= c.bin_start && b < c.bin_start + c.n_bins)
                .map_or("?".to_string(), |c| {
                    format!("{} bin {}", c.name, b - c.bin_start)
                });
            return Err(Error::Usage(format!(
                "cannot draw toys: the expected rate in channel {ch} is {r} at the generating parameters"
            )));
        }
        let main = expected.iter().map(|&m| PoissonTable::new(m)).collect();
        let l = &model.layout;
        let gauss = l
            .gauss
            .iter()
            .map(|g| (g.aux as usize, gen_pars[g.param as usize], g.sigma))
            .collect();
        let mut poisson = Vec::with_capacity(l.poisson.len());
        for t in &l.poisson {
            let mean = gen_pars[t.param as usize] * t.tau;
            if !(mean.is_finite() && mean >= 0.0) {
                return Err(Error::Usage(format!(
                    "cannot draw toys: the auxiliary mean of {} is {mean}",
                    model.parameters[t.param as usize].name
                )));
            }
            poisson.push((t.aux as usize, PoissonTable::new(mean)));
        }
        Ok(ToyGenerator {
            model,
            gen_pars: gen_pars.to_vec(),
            expected,
            main,
            gauss,
            poisson,
        })
    }

    /// Number of auxiliary data of the model.
    pub fn n_aux(&self) -> usize {
        self.model.observed.aux.len()
    }

    /// Integer main counts of toy `toy` of `ensemble` (identical on every engine).
    pub fn main_counts(&self, seed: u64, ensemble: u32, toy: u64, out: &mut [u32]) {
        let s = ToyStream::new(seed, ensemble, toy);
        for (b, (o, t)) in out.iter_mut().zip(&self.main).enumerate() {
            *o = t.sample(s.u64_at(b as u32));
        }
    }

    /// Writes toy `toy` of `ensemble` into `main` and `aux`.
    pub fn generate_into(
        &self,
        seed: u64,
        ensemble: u32,
        toy: u64,
        main: &mut [f64],
        aux: &mut [f64],
    ) {
        let s = ToyStream::new(seed, ensemble, toy);
        let nb = self.main.len() as u32;
        for (b, (o, t)) in main.iter_mut().zip(&self.main).enumerate() {
            *o = t.sample(s.u64_at(b as u32)) as f64;
        }
        for (j, &(a, centre, sigma)) in self.gauss.iter().enumerate() {
            let p = nb + 2 * j as u32;
            aux[a] = centre + sigma * normal_from_uniforms(s.uniform_at(p), s.uniform_at(p + 1));
        }
        let base = nb + 2 * self.gauss.len() as u32;
        for (j, (a, t)) in self.poisson.iter().enumerate() {
            aux[*a] = t.sample(s.u64_at(base + j as u32)) as f64;
        }
    }

    /// Toy `toy` of `ensemble` as a dataset.
    pub fn generate(&self, seed: u64, ensemble: u32, toy: u64) -> Dataset {
        let mut main = vec![0.0; self.model.n_bins()];
        let mut aux = vec![0.0; self.model.observed.aux.len()];
        self.generate_into(seed, ensemble, toy, &mut main, &mut aux);
        Dataset::from_parts(self.model, main, aux)
    }
}
