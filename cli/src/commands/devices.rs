//! `nextstat devices`: the compute devices this machine offers.

use crate::common::{CliResult, OutputArgs};
use serde_json::json;
use std::fmt::Write;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    out: OutputArgs,
}

pub fn run(a: Args) -> CliResult {
    let adapters = nextstat::device::wgpu::list_adapters();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let value = json!({
        "cpu": {"threads": cpus},
        "wgpu_adapters": adapters.iter().map(|d| json!({
            "name": d.name, "backend": d.backend, "device_type": d.device_type, "driver": d.driver,
            "max_storage_buffer_binding_size": d.max_storage_buffer_binding_size,
            "max_compute_workgroups_per_dimension": d.max_compute_workgroups_per_dimension,
        })).collect::<Vec<_>>(),
    });
    a.out.emit(&value, || {
        let mut s = String::new();
        let _ = writeln!(s, "cpu: {cpus} threads (engine: cpu, f64)");
        if adapters.is_empty() {
            let _ = writeln!(s, "wgpu: no adapter found (on Linux without a GPU: apt-get install mesa-vulkan-drivers)");
        }
        for d in &adapters {
            let _ = writeln!(
                s,
                "wgpu: {} [{} {}] driver {}; max storage binding {} MiB",
                d.name,
                d.backend,
                d.device_type,
                if d.driver.is_empty() { "-" } else { &d.driver },
                d.max_storage_buffer_binding_size >> 20
            );
        }
        s
    })
}
