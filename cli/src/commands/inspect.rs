//! `nextstat inspect`: what a workspace contains, as the compiled model sees it.

use crate::common::{CliResult, ModelArgs, OutputArgs};
use nextstat::model::{Constraint, ParamKind};
use serde_json::json;
use std::collections::BTreeMap;
use std::fmt::Write;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    out: OutputArgs,
}

pub fn run(a: Args) -> CliResult {
    let (ws, model) = a.model.load()?;
    let poi = &model.parameters[model.poi].name;
    let params: Vec<_> = model
        .parameters
        .iter()
        .map(|p| {
            let constraint = match p.constraint {
                Constraint::None => json!(null),
                Constraint::Gaussian { sigma, aux } => {
                    json!({"type": "gaussian", "sigma": sigma, "auxdata": model.observed.aux[aux]})
                }
                Constraint::Poisson { tau, aux } => {
                    json!({"type": "poisson", "tau": tau, "auxdata": model.observed.aux[aux]})
                }
            };
            json!({
                "name": p.name, "set": p.set, "kind": p.kind.label(), "init": p.init,
                "bounds": [p.bounds.0, p.bounds.1], "fixed": p.fixed, "constraint": constraint,
            })
        })
        .collect();
    let channels: Vec<_> = model
        .channels
        .iter()
        .map(|c| json!({"name": c.name, "n_bins": c.n_bins, "samples": c.samples}))
        .collect();
    let value = json!({
        "input": a.model.input.display().to_string(),
        "measurement": model.measurement,
        "measurements": ws.measurements.iter().map(|m| m.name.clone()).collect::<Vec<_>>(),
        "poi": poi,
        "interp": {"normsys": model.interp.normsys.to_string(), "histosys": model.interp.histosys.to_string()},
        "n_bins": model.n_bins(),
        "n_parameters": model.n_params(),
        "channels": channels,
        "parameters": params,
        "unused_parameter_configs": model.unused_configs,
    });
    a.out.emit(&value, || table(&model, poi))
}

fn table(model: &nextstat::Model, poi: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "measurement  {}", model.measurement);
    let _ = writeln!(s, "POI          {poi}");
    let _ = writeln!(
        s,
        "size         {} channels, {} bins, {} parameters ({} free)",
        model.channels.len(),
        model.n_bins(),
        model.n_params(),
        model.parameters.iter().filter(|p| !p.fixed).count()
    );
    let _ = writeln!(s, "\n{:<24} {:>5}  samples", "channel", "bins");
    for c in &model.channels {
        let _ = writeln!(
            s,
            "{:<24} {:>5}  {}",
            c.name,
            c.n_bins,
            c.samples.join(", ")
        );
    }
    let mut by_kind: BTreeMap<ParamKind, Vec<&str>> = BTreeMap::new();
    let mut sets_seen = std::collections::HashSet::new();
    for p in &model.parameters {
        if sets_seen.insert(p.set.as_str()) {
            by_kind.entry(p.kind).or_default().push(p.set.as_str());
        }
    }
    let _ = writeln!(s, "\n{:<18} {:>5}  parameter sets", "kind", "sets");
    for (k, names) in &by_kind {
        let shown: Vec<&str> = names.iter().take(6).copied().collect();
        let more = if names.len() > 6 {
            format!(", ... ({} more)", names.len() - 6)
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "{:<18} {:>5}  {}{more}",
            k.label(),
            names.len(),
            shown.join(", ")
        );
    }
    let fixed: Vec<&str> = model
        .parameters
        .iter()
        .filter(|p| p.fixed)
        .map(|p| p.name.as_str())
        .collect();
    if !fixed.is_empty() {
        let _ = writeln!(s, "\nfixed: {}", fixed.join(", "));
    }
    if !model.unused_configs.is_empty() {
        let _ = writeln!(
            s,
            "note: parameter configs that no modifier uses (ignored, as in pyhf): {}",
            model.unused_configs.join(", ")
        );
    }
    s
}
