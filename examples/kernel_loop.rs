//! Runs the NLL + gradient kernel N times on a workspace (for profilers: perf, callgrind).
//!
//! `cargo run --release --example kernel_loop -- WORKSPACE.json [N]`
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: kernel_loop WORKSPACE.json [N]")?;
    let n: usize = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(100_000)
        .max(1);
    let model = nextstat::Model::from_path(&path)?;
    let pars = model.init();
    let mut grad = vec![0.0; pars.len()];
    let mut ev = nextstat::Evaluator::new(&model);
    let mut acc = 0.0;
    let t = std::time::Instant::now();
    let mut per_call = Vec::with_capacity(n);
    for _ in 0..n {
        let c = std::time::Instant::now();
        acc += ev.nll_grad_unchecked(
            std::hint::black_box(&pars),
            &model.observed,
            Some(&mut grad),
        );
        per_call.push(c.elapsed().as_nanos() as u64);
    }
    let dt = t.elapsed().as_secs_f64() / n as f64;
    per_call.sort_unstable();
    println!(
        "{:.3} us per NLL+grad on average; per call: fastest {:.3} us, median {:.3} us, \
         10th percentile {:.3} us (checksum {acc:.6e})",
        dt * 1e6,
        per_call[0] as f64 * 1e-3,
        per_call[n / 2] as f64 * 1e-3,
        per_call[n / 10] as f64 * 1e-3,
    );
    Ok(())
}
