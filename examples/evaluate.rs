//! Embedding nextstat: load a workspace, look at its parameters, evaluate the NLL and its
//! gradient, then evaluate a batch of parameter points in parallel.
//!
//! `cargo run --release --example evaluate -- examples/models/counting.json`

use nextstat::{CompileOptions, Evaluator, InterpCodes, Model, Workspace};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "examples/models/counting.json".to_string());
    let ws = Workspace::from_path(&path)?;
    let options = CompileOptions {
        measurement: None, // the first measurement
        interp: "normsys=code4,histosys=code4p".parse::<InterpCodes>()?, // pyhf's defaults
    };
    let model = Model::from_workspace(&ws, &options)?;
    println!(
        "{}: {} bins, {} parameters, POI {}",
        path,
        model.n_bins(),
        model.n_params(),
        model.parameters[model.poi].name
    );

    // NLL (pyhf's -logpdf) and gradient at the suggested init.
    let (nll, grad) = model.nll_grad(&model.init())?;
    println!("NLL at init = {nll:.10}");
    for (p, g) in model.parameters.iter().zip(&grad).take(5) {
        println!("  dNLL/d{:<20} = {g:+.6e}", p.name);
    }

    // In a loop, keep one Evaluator: it owns its scratch space and allocates nothing per call.
    let mut ev = Evaluator::new(&model);
    let mut pars = model.init();
    let mut g = vec![0.0; pars.len()];
    for mu in [0.0, 0.5, 1.0, 2.0] {
        model.set_param(&mut pars, &model.parameters[model.poi].name, mu)?;
        let v = ev.nll_grad(&pars, &model.observed, &mut g)?;
        println!("POI = {mu:.1}: NLL = {v:.6}");
    }

    // Many points (or datasets) at once, in parallel over rayon's threads.
    let points: Vec<Vec<f64>> = (0..8)
        .map(|i| {
            let mut p = model.init();
            p[model.poi] = 0.25 * i as f64;
            p
        })
        .collect();
    let items: Vec<(&[f64], &nextstat::Dataset)> = points
        .iter()
        .map(|p| (p.as_slice(), &model.observed))
        .collect();
    let results = model.nll_grad_batch(&items);
    println!(
        "batch of {}: first NLL {:.6}",
        results.len(),
        results[0].as_ref().map(|r| r.0).unwrap_or(f64::NAN)
    );
    Ok(())
}
