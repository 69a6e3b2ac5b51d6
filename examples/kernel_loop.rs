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
        .unwrap_or(100_000);
    let model = nextstat::Model::from_path(&path)?;
    let pars = model.init();
    let mut grad = vec![0.0; pars.len()];
    let mut ev = nextstat::Evaluator::new(&model);
    let mut acc = 0.0;
    let t = std::time::Instant::now();
    for _ in 0..n {
        acc += ev.nll_grad_unchecked(
            std::hint::black_box(&pars),
            &model.observed,
            Some(&mut grad),
        );
    }
    let dt = t.elapsed().as_secs_f64() / n as f64;
    println!("{:.3} us per NLL+grad (checksum {acc:.6e})", dt * 1e6);
    Ok(())
}
