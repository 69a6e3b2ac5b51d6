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
    let cuda = nextstat::device::cuda_devices();
    let cuda_json = match &cuda {
        Ok(list) => json!({"available": true, "devices": list.iter().map(|d| json!({
            "ordinal": d.ordinal, "name": d.name,
            "compute_capability": format!("{}.{}", d.compute_capability.0, d.compute_capability.1),
            "memory_bytes": d.memory_bytes,
        })).collect::<Vec<_>>()}),
        Err(e) => json!({"available": false, "reason": e.to_string()}),
    };
    let value = json!({
        "cpu": {"threads": cpus},
        "cuda": cuda_json,
        "wgpu_adapters": adapters.iter().map(|d| json!({
            "name": d.name, "backend": d.backend, "device_type": d.device_type, "driver": d.driver,
            "max_storage_buffer_binding_size": d.max_storage_buffer_binding_size,
            "max_compute_workgroups_per_dimension": d.max_compute_workgroups_per_dimension,
            "max_compute_workgroup_storage_size": d.max_compute_workgroup_storage_size,
        })).collect::<Vec<_>>(),
    });
    a.out.emit(&value, || {
        let mut s = String::new();
        let _ = writeln!(s, "cpu: {cpus} threads (engine: cpu, f64)");
        if adapters.is_empty() {
            let _ = writeln!(s, "wgpu: no adapter found (on Linux without a GPU: apt-get install mesa-vulkan-drivers)");
        }
        match &cuda {
            Ok(list) if list.is_empty() => {
                let _ = writeln!(s, "cuda: no device visible");
            }
            Ok(list) => {
                for d in list {
                    let _ = writeln!(
                        s,
                        "cuda:{}: {} (compute {}.{}, {} GiB; engine: cuda, f64)",
                        d.ordinal,
                        d.name,
                        d.compute_capability.0,
                        d.compute_capability.1,
                        d.memory_bytes >> 30
                    );
                }
            }
            Err(e) => {
                let _ = writeln!(s, "cuda: not available ({e})");
            }
        }
        for d in &adapters {
            let _ = writeln!(
                s,
                "wgpu: {} [{} {}] driver {}; max storage binding {} MiB, workgroup memory {} bytes",
                d.name,
                d.backend,
                d.device_type,
                if d.driver.is_empty() { "-" } else { &d.driver },
                d.max_storage_buffer_binding_size >> 20,
                d.max_compute_workgroup_storage_size
            );
        }
        s
    })
}
