//! The `nextstat` binary on bad input: every case must exit with code 2 and print one error
//! that names the file (or the option) at fault, the JSON path inside it, and what is wrong.
//! Valid inputs must still exit 0.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_nextstat");

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/models")
        .join(name)
}

fn example_value(name: &str) -> Value {
    let text = std::fs::read_to_string(example(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A fresh directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("nextstat-bad-input-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn write_json(&self, name: &str, v: &Value) -> PathBuf {
        self.write(name, &serde_json::to_string_pretty(v).unwrap())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run nextstat")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts exit code 2 and that stderr contains every fragment.
#[track_caller]
fn assert_input_error(o: &Output, fragments: &[&str]) {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(2),
        "expected exit code 2, got {:?}\nstdout: {}\nstderr: {err}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(err.starts_with("error: "), "stderr: {err}");
    for f in fragments {
        assert!(
            err.contains(f),
            "stderr does not contain {f:?}\nstderr: {err}"
        );
    }
    assert!(o.stdout.is_empty(), "nothing on stdout on error");
}

/// Writes `v` to a temp file, runs `nll -i FILE extra...` and checks exit code 2, the file
/// name and the fragments.
#[track_caller]
fn check_ws(test: &str, v: &Value, extra: &[&str], fragments: &[&str]) {
    let dir = TempDir::new(test);
    let path = dir.write_json("ws.json", v);
    let shown = path.display().to_string();
    let mut args = vec!["nll", "-i", shown.as_str()];
    args.extend_from_slice(extra);
    let o = run(&args);
    let mut all = vec![shown.as_str()];
    all.extend_from_slice(fragments);
    assert_input_error(&o, &all);
}

/// The counting example with `edit` applied.
fn counting_with(edit: impl FnOnce(&mut Value)) -> Value {
    let mut v = example_value("counting.json");
    edit(&mut v);
    v
}

fn at<'v>(v: &'v mut Value, pointer: &str) -> &'v mut Value {
    v.pointer_mut(pointer)
        .unwrap_or_else(|| panic!("no {pointer} in the example"))
}

fn obj<'v>(v: &'v mut Value, pointer: &str) -> &'v mut serde_json::Map<String, Value> {
    at(v, pointer).as_object_mut().unwrap()
}

fn arr<'v>(v: &'v mut Value, pointer: &str) -> &'v mut Vec<Value> {
    at(v, pointer).as_array_mut().unwrap()
}

// ---- JSON syntax and files --------------------------------------------------------------

#[test]
fn malformed_json_reports_line_and_column() {
    let dir = TempDir::new("malformed");
    let path = dir.write(
        "ws.json",
        "{\n  \"version\": \"1.0.0\",\n  \"channels\": [}\n",
    );
    let shown = path.display().to_string();
    let o = run(&["nll", "-i", &shown]);
    assert_input_error(&o, &[&shown, "malformed JSON", "line 3, column 16"]);
}

#[test]
fn truncated_json_is_malformed() {
    let dir = TempDir::new("truncated");
    let text = std::fs::read_to_string(example("counting.json")).unwrap();
    let path = dir.write("ws.json", &text[..text.len() / 2]);
    let shown = path.display().to_string();
    let o = run(&["inspect", "-i", &shown]);
    assert_input_error(&o, &[&shown, "malformed JSON at line", "EOF while parsing"]);
}

#[test]
fn huge_number_is_a_clear_error() {
    // JSON has no NaN or Infinity, but 1e999 is valid JSON syntax; serde_json refuses it.
    let dir = TempDir::new("huge");
    let text = serde_json::to_string_pretty(&example_value("counting.json"))
        .unwrap()
        .replacen("2.1", "1e999", 1);
    let path = dir.write("ws.json", &text);
    let shown = path.display().to_string();
    let o = run(&["nll", "-i", &shown]);
    assert_input_error(
        &o,
        &[&shown, "malformed JSON at line", "number out of range"],
    );
}

#[test]
fn missing_file() {
    let dir = TempDir::new("missing");
    let path = dir.0.join("does-not-exist.json");
    let shown = path.display().to_string();
    let o = run(&["nll", "-i", &shown]);
    assert_input_error(&o, &["cannot read", &shown]);
}

// ---- schema: keys and types ----------------------------------------------------------------

#[test]
fn unknown_top_level_key() {
    let v = counting_with(|v| {
        let m = v.as_object_mut().unwrap();
        let ch = m.remove("channels").unwrap();
        m.insert("channel".into(), ch);
    });
    check_ws(
        "top_key",
        &v,
        &[],
        &["unknown key 'channel'", "allowed here: channels"],
    );
}

#[test]
fn unknown_key_in_sample() {
    let v = counting_with(|v| {
        obj(v, "/channels/0/samples/1").insert("dat".into(), json!([1.0]));
    });
    check_ws(
        "sample_key",
        &v,
        &[],
        &["channels[0] 'SR' / samples[1] 'ttbar'", "unknown key 'dat'"],
    );
}

#[test]
fn unknown_key_in_modifier() {
    let v = counting_with(|v| {
        obj(v, "/channels/0/samples/0/modifiers/2").insert("sigma".into(), json!(1.0));
    });
    check_ws(
        "modifier_key",
        &v,
        &[],
        &[
            "channels[0] 'SR' / samples[0] 'signal' / modifiers[2] 'sig_theory' (normsys)",
            "unknown key 'sigma'",
        ],
    );
}

#[test]
fn unknown_key_in_parameter_config() {
    let v = counting_with(|v| {
        let p = obj(v, "/measurements/0/config/parameters/0");
        let s = p.remove("sigmas").unwrap();
        p.insert("sigma".into(), s);
    });
    check_ws(
        "config_key",
        &v,
        &[],
        &[
            "measurements[0] 'SignalSearch' / config / parameters[0] 'lumi'",
            "unknown key 'sigma'",
        ],
    );
}

#[test]
fn unknown_modifier_type() {
    let v = counting_with(|v| {
        *at(v, "/channels/0/samples/0/modifiers/0/type") = json!("normfactr");
    });
    check_ws(
        "modifier_type",
        &v,
        &[],
        &[
            "samples[0] 'signal' / modifiers[0] 'mu' (normfactr) / type",
            "unknown modifier type 'normfactr'",
        ],
    );
}

#[test]
fn normsys_data_null() {
    let v = counting_with(|v| {
        *at(v, "/channels/0/samples/0/modifiers/2/data") = Value::Null;
    });
    check_ws(
        "normsys_null",
        &v,
        &[],
        &[
            "modifiers[2] 'sig_theory' (normsys) / data",
            "expected an object, found null",
        ],
    );
}

#[test]
fn histosys_missing_hi_data() {
    let v = counting_with(|v| {
        obj(v, "/channels/0/samples/1/modifiers/3/data").remove("hi_data");
    });
    check_ws(
        "histosys_no_hi",
        &v,
        &[],
        &[
            "samples[1] 'ttbar' / modifiers[3] 'jes' (histosys) / data",
            "missing required key 'hi_data'",
        ],
    );
}

#[test]
fn normfactor_with_data() {
    let v = counting_with(|v| {
        *at(v, "/channels/0/samples/0/modifiers/0/data") = json!([1.0]);
    });
    check_ws(
        "normfactor_data",
        &v,
        &[],
        &[
            "modifiers[0] 'mu' (normfactor) / data",
            "takes data null, found an array",
        ],
    );
}

#[test]
fn non_positive_normsys_factor() {
    let v = counting_with(|v| {
        *at(v, "/channels/0/samples/0/modifiers/2/data/lo") = json!(0.0);
    });
    check_ws(
        "normsys_zero",
        &v,
        &[],
        &[
            "modifiers[2] 'sig_theory' (normsys) / data",
            "normsys factors must be positive",
        ],
    );
}

#[test]
fn negative_observed_count() {
    let v = counting_with(|v| {
        *at(v, "/observations/0/data/2") = json!(-1.0);
    });
    check_ws(
        "negative_obs",
        &v,
        &[],
        &[
            "observations[0] 'SR' / data[2]",
            "observed count -1 is negative",
        ],
    );
}

// ---- bin counts ----------------------------------------------------------------------------

#[test]
fn sample_data_length_mismatch() {
    let v = counting_with(|v| {
        arr(v, "/channels/0/samples/2/data").pop();
    });
    check_ws(
        "sample_len",
        &v,
        &[],
        &[
            "channels[0] 'SR' / samples[2] 'wjets' / data",
            "sample has 3 bins but the observation of channel 'SR' has 4",
        ],
    );
}

#[test]
fn histosys_hi_data_length_mismatch() {
    let v = counting_with(|v| {
        arr(v, "/channels/0/samples/2/modifiers/2/data/hi_data").push(json!(1.0));
    });
    check_ws(
        "histosys_len",
        &v,
        &[],
        &[
            "samples[2] 'wjets' / modifiers[2] 'wjets_shape' (histosys) / data / hi_data",
            "has 5 bins but the channel has 4",
        ],
    );
}

#[test]
fn staterror_length_mismatch() {
    let v = counting_with(|v| {
        arr(v, "/channels/1/samples/1/modifiers/4/data").push(json!(1.0));
    });
    check_ws(
        "staterror_len",
        &v,
        &[],
        &[
            "channels[1] 'CR' / samples[1] 'ttbar' / modifiers[4] 'staterror_CR' (staterror) / data",
            "has 3 bins but the channel has 2",
        ],
    );
}

#[test]
fn shapesys_length_mismatch() {
    let mut v = example_value("shapes.json");
    arr(&mut v, "/channels/0/samples/1/modifiers/1/data").pop();
    check_ws(
        "shapesys_len",
        &v,
        &[],
        &[
            "channels[0] 'SR' / samples[1] 'bkg_mc' / modifiers[1] 'bkg_mc_stat' (shapesys) / data",
            "has 3 bins but the channel has 4",
        ],
    );
}

#[test]
fn empty_sample_data() {
    let v = counting_with(|v| {
        *at(v, "/channels/0/samples/0/data") = json!([]);
    });
    check_ws(
        "empty_data",
        &v,
        &[],
        &[
            "channels[0] 'SR' / samples[0] 'signal' / data",
            "expected at least one number",
        ],
    );
}

// ---- channels and observations -------------------------------------------------------------

#[test]
fn channel_without_observation() {
    let v = counting_with(|v| {
        arr(v, "/observations").remove(1);
    });
    check_ws(
        "no_obs",
        &v,
        &[],
        &["channels[1] 'CR'", "channel 'CR' has no observation"],
    );
}

#[test]
fn observation_without_channel() {
    let v = counting_with(|v| {
        arr(v, "/observations").push(json!({"name": "VR", "data": [1.0]}));
    });
    check_ws(
        "no_channel",
        &v,
        &[],
        &[
            "observations[2] 'VR'",
            "observation for channel 'VR', which does not exist",
        ],
    );
}

// ---- POI -----------------------------------------------------------------------------------

#[test]
fn poi_that_does_not_exist() {
    let v = counting_with(|v| {
        *at(v, "/measurements/0/config/poi") = json!("mu_sig");
    });
    check_ws(
        "poi_missing",
        &v,
        &[],
        &[
            "measurements[0] 'SignalSearch' / config / poi",
            "POI 'mu_sig' is not a parameter of the model",
        ],
    );
}

#[test]
fn poi_that_is_a_vector_parameter() {
    let v = counting_with(|v| {
        *at(v, "/measurements/0/config/poi") = json!("staterror_SR");
    });
    check_ws(
        "poi_vector",
        &v,
        &[],
        &[
            "measurements[0] 'SignalSearch' / config / poi",
            "POI 'staterror_SR' is a 4-element staterror parameter set",
            "must be a scalar",
        ],
    );
}

// ---- duplicates and name reuse ---------------------------------------------------------------

#[test]
fn duplicate_channel_names() {
    let v = counting_with(|v| {
        *at(v, "/channels/1/name") = json!("SR");
    });
    check_ws(
        "dup_channel",
        &v,
        &[],
        &["channels", "duplicate channel name 'SR'"],
    );
}

#[test]
fn duplicate_sample_names() {
    let v = counting_with(|v| {
        *at(v, "/channels/1/samples/2/name") = json!("ttbar");
    });
    check_ws(
        "dup_sample",
        &v,
        &[],
        &[
            "channels[1] 'CR' / samples",
            "duplicate sample name 'ttbar'",
        ],
    );
}

#[test]
fn duplicate_modifier_in_a_sample() {
    let v = counting_with(|v| {
        let mods = arr(v, "/channels/0/samples/1/modifiers");
        let jes = mods[2].clone();
        mods.push(jes);
    });
    check_ws(
        "dup_modifier",
        &v,
        &[],
        &[
            "channels[0] 'SR' / samples[1] 'ttbar' / modifiers[5] 'jes'",
            "duplicate normsys modifier 'jes' in this sample",
        ],
    );
}

#[test]
fn normfactor_and_normsys_share_a_name() {
    let v = counting_with(|v| {
        arr(v, "/channels/0/samples/1/modifiers")
            .push(json!({"name": "mu", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}}));
    });
    check_ws(
        "name_reuse",
        &v,
        &[],
        &[
            "channels[0] 'SR' / samples[1] 'ttbar' / modifiers[5] 'mu' (normsys)",
            "used by a normsys modifier here and by a normfactor modifier at",
            "only normsys and histosys may share a name",
        ],
    );
}

#[test]
fn shapesys_name_reused() {
    let v = counting_with(|v| {
        for s in [1, 2] {
            arr(v, &format!("/channels/0/samples/{s}/modifiers")).push(
                json!({"name": "bkg_stat", "type": "shapesys", "data": [1.0, 1.0, 1.0, 1.0]}),
            );
        }
    });
    check_ws(
        "shapesys_reuse",
        &v,
        &[],
        &[
            "channels[0] 'SR' / samples[2] 'wjets' / modifiers[4] 'bkg_stat' (shapesys)",
            "shapesys 'bkg_stat' is already used at channels[0] 'SR' / samples[1] 'ttbar'",
        ],
    );
}

// ---- measurement configs -------------------------------------------------------------------

#[test]
fn lumi_without_measurement_config() {
    let v = counting_with(|v| {
        arr(v, "/measurements/0/config/parameters").remove(0);
    });
    check_ws(
        "lumi_config",
        &v,
        &[],
        &[
            "measurements[0] 'SignalSearch' / config / parameters",
            "the lumi parameter 'lumi' needs a parameter config",
        ],
    );
}

#[test]
fn parameter_config_with_wrong_inits_length() {
    let v = counting_with(|v| {
        arr(v, "/measurements/0/config/parameters")
            .push(json!({"name": "staterror_SR", "inits": [1.0, 1.0]}));
    });
    check_ws(
        "inits_len",
        &v,
        &[],
        &[
            "measurements[0] 'SignalSearch' / config / parameters[2] 'staterror_SR' / inits",
            "has 2 values but parameter set 'staterror_SR' has 4 parameters",
        ],
    );
}

#[test]
fn sigmas_on_a_normfactor() {
    let v = counting_with(|v| {
        obj(v, "/measurements/0/config/parameters/1").insert("sigmas".into(), json!([0.1]));
    });
    check_ws(
        "normfactor_sigmas",
        &v,
        &[],
        &[
            "measurements[0] 'SignalSearch' / config / parameters[1] 'mu' / sigmas",
            "'mu' is a normfactor parameter, which does not take sigmas",
        ],
    );
}

#[test]
fn bounds_upside_down() {
    let v = counting_with(|v| {
        *at(v, "/measurements/0/config/parameters/1/bounds") = json!([[10.0, 0.0]]);
    });
    check_ws(
        "bounds_order",
        &v,
        &[],
        &[
            "parameters[1] 'mu' / bounds / [0]",
            "lower bound 10 is above upper bound 0",
        ],
    );
}

// ---- command-line options ------------------------------------------------------------------

#[test]
fn bad_interp_value() {
    let counting = example("counting.json");
    let o = run(&[
        "nll",
        "-i",
        counting.to_str().unwrap(),
        "--interp",
        "normsys=code7",
    ]);
    assert_input_error(
        &o,
        &[
            "--interp",
            "unknown normsys interpolation code 'code7'",
            "known: code1, code4",
        ],
    );
    let o = run(&[
        "nll",
        "-i",
        counting.to_str().unwrap(),
        "--interp",
        "histosys",
    ]);
    assert_input_error(&o, &["--interp", "expected normsys=CODE or histosys=CODE"]);
}

#[test]
fn measurement_that_does_not_exist() {
    let multi = example("multi.json");
    let shown = multi.to_str().unwrap();
    let o = run(&["inspect", "-i", shown, "--measurement", "meas_tth"]);
    assert_input_error(
        &o,
        &[
            shown,
            "measurements",
            "no measurement named 'meas_tth'",
            "meas_ttH, meas_ttW",
        ],
    );
}

#[test]
fn pars_with_unknown_name() {
    let counting = example("counting.json");
    let o = run(&["nll", "-i", counting.to_str().unwrap(), "--pars", "muu=1"]);
    assert_input_error(&o, &["--pars 'muu=1'", "unknown parameter 'muu'"]);
    // a vector set by its set name: the hint says how to spell its elements
    let o = run(&[
        "nll",
        "-i",
        counting.to_str().unwrap(),
        "--pars",
        "staterror_SR=1",
    ]);
    assert_input_error(
        &o,
        &[
            "unknown parameter 'staterror_SR'",
            "parameter set with 4 elements: staterror_SR[0]",
        ],
    );
}

#[test]
fn pars_with_non_number() {
    let counting = example("counting.json");
    let o = run(&["nll", "-i", counting.to_str().unwrap(), "--pars", "mu=abc"]);
    assert_input_error(&o, &["--pars 'mu=abc'", "'abc' is not a number"]);
    let o = run(&["nll", "-i", counting.to_str().unwrap(), "--pars", "mu"]);
    assert_input_error(&o, &["--pars 'mu'", "expected name=value"]);
    let o = run(&["nll", "-i", counting.to_str().unwrap(), "--pars", "mu=inf"]);
    assert_input_error(&o, &["--pars 'mu=inf'", "non-finite value inf"]);
}

#[test]
fn pars_file_with_unknown_name() {
    let dir = TempDir::new("pars_file");
    let pf = dir.write_json("pars.json", &json!({"mu": 1.0, "jess": 0.5}));
    let shown = pf.display().to_string();
    let counting = example("counting.json");
    let o = run(&[
        "nll",
        "-i",
        counting.to_str().unwrap(),
        "--pars-file",
        &shown,
    ]);
    assert_input_error(&o, &[&shown, "jess", "unknown parameter 'jess'"]);
}

#[test]
fn pars_file_with_bad_values() {
    let dir = TempDir::new("pars_file_values");
    let counting = example("counting.json");
    let cases = [
        (json!({"mu": "1"}), vec!["mu", "expected a number"]),
        (
            json!({"staterror_SR": [1.0, 1.0]}),
            vec!["staterror_SR", "has 4 elements, got 2 values"],
        ),
        (
            json!({"staterror_SR": [1.0, null, 1.0, 1.0]}),
            vec!["staterror_SR[1]", "expected a finite number"],
        ),
        (json!([1.0]), vec!["expected a JSON object"]),
    ];
    for (i, (v, fragments)) in cases.iter().enumerate() {
        let pf = dir.write_json(&format!("pars{i}.json"), v);
        let shown = pf.display().to_string();
        let o = run(&[
            "nll",
            "-i",
            counting.to_str().unwrap(),
            "--pars-file",
            &shown,
        ]);
        let mut all = vec![shown.as_str()];
        all.extend(fragments.iter().copied());
        assert_input_error(&o, &all);
    }
    let pf = dir.write("broken.json", "{\"mu\": ");
    let shown = pf.display().to_string();
    let o = run(&[
        "nll",
        "-i",
        counting.to_str().unwrap(),
        "--pars-file",
        &shown,
    ]);
    assert_input_error(&o, &[&shown, "malformed JSON"]);
}

// ---- the likelihood at the evaluated point -----------------------------------------------------

/// One channel, two bins: a signal scaled by mu and a sample with a negative yield in bin 0.
fn negative_yield_workspace() -> Value {
    json!({
        "version": "1.0.0",
        "channels": [{"name": "SR", "samples": [
            {"name": "signal", "data": [5.0, 5.0],
             "modifiers": [{"name": "mu", "type": "normfactor", "data": null}]},
            {"name": "interference", "data": [-2.0, 3.0], "modifiers": []}
        ]}],
        "observations": [{"name": "SR", "data": [4.0, 7.0]}],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}]
    })
}

#[test]
fn non_positive_rate_names_channel_and_bin() {
    check_ws(
        "negative_rate",
        &negative_yield_workspace(),
        &["--pars", "mu=0"],
        &[
            "channel 'SR' bin 0",
            "expected rate -2",
            "observed 4",
            "not a positive number",
        ],
    );
}

#[test]
fn negative_yield_with_positive_total_rate_is_accepted() {
    let dir = TempDir::new("negative_yield_ok");
    let path = dir.write_json("ws.json", &negative_yield_workspace());
    let o = run(&["nll", "-i", path.to_str().unwrap(), "--grad", "--json"]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["nll"].as_f64().unwrap().is_finite());
    assert!(v["grad"]["mu"].as_f64().unwrap().is_finite());
}

// ---- valid inputs ----------------------------------------------------------------------------

#[test]
fn counting_nll_json() {
    let counting = example("counting.json");
    let o = run(&["nll", "-i", counting.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("stdout is JSON");
    let nll = v["nll"].as_f64().expect("key nll");
    assert!(nll.is_finite());
    assert!((v["twice_nll"].as_f64().unwrap() - 2.0 * nll).abs() < 1e-12);
    assert_eq!(v["parameters"]["mu"], json!(1.0));
}

#[test]
fn counting_nll_with_pars_and_pars_file() {
    let dir = TempDir::new("pars_ok");
    let pf = dir.write_json(
        "pars.json",
        &json!({"mu": 2.0, "staterror_SR": [1.0, 1.01, 0.99, 1.0]}),
    );
    let counting = example("counting.json");
    let o = run(&[
        "nll",
        "-i",
        counting.to_str().unwrap(),
        "--pars-file",
        pf.to_str().unwrap(),
        "--pars",
        "jes=0.5,mu=1.5",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    // the command line wins over the file
    assert_eq!(v["parameters"]["mu"], json!(1.5));
    assert_eq!(v["parameters"]["jes"], json!(0.5));
    assert_eq!(v["parameters"]["staterror_SR[1]"], json!(1.01));
}

#[test]
fn inspect_json_multi_both_measurements() {
    let multi = example("multi.json");
    let mut nlls = Vec::new();
    for (meas, poi) in [("meas_ttH", "mu_ttH"), ("meas_ttW", "mu_ttW")] {
        let o = run(&[
            "inspect",
            "-i",
            multi.to_str().unwrap(),
            "--measurement",
            meas,
            "--json",
        ]);
        assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["measurement"], json!(meas));
        assert_eq!(v["poi"], json!(poi));
        assert_eq!(v["measurements"], json!(["meas_ttH", "meas_ttW"]));
        let lumi = v["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "lumi")
            .unwrap();
        nlls.push(lumi["constraint"]["sigma"].as_f64().unwrap());

        let o = run(&[
            "nll",
            "-i",
            multi.to_str().unwrap(),
            "--measurement",
            meas,
            "--json",
        ]);
        assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    }
    // the measurements configure lumi differently
    assert_eq!(nlls, [0.017, 0.025]);
}

#[test]
fn every_example_inspects_and_evaluates() {
    for name in ["counting.json", "multi.json", "shapes.json"] {
        let p = example(name);
        for cmd in ["inspect", "nll"] {
            let o = run(&[cmd, "-i", p.to_str().unwrap()]);
            assert_eq!(o.status.code(), Some(0), "{cmd} {name}: {}", stderr(&o));
        }
    }
}

#[test]
fn byte_order_mark_is_accepted() {
    // Files saved by some Windows editors start with a UTF-8 BOM; it used to be reported as
    // "malformed JSON at line 1, column 1: expected value".
    let dir = TempDir::new("bom");
    let text = std::fs::read_to_string(example("counting.json")).unwrap();
    let ws = dir.write("ws.json", &format!("\u{feff}{text}"));
    let pf = dir.write("pars.json", "\u{feff}{\"mu\": 0.5}");
    let o = run(&[
        "nll",
        "-i",
        ws.to_str().unwrap(),
        "--pars-file",
        pf.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["parameters"]["mu"], json!(0.5));
}

#[test]
fn other_unreadable_inputs() {
    let dir = TempDir::new("unreadable");
    // empty file
    let p = dir.write("empty.json", "");
    let shown = p.display().to_string();
    assert_input_error(
        &run(&["nll", "-i", &shown]),
        &[
            &shown,
            "malformed JSON at line 1",
            "EOF while parsing a value",
        ],
    );
    // not UTF-8
    let p = dir.0.join("latin1.json");
    std::fs::write(&p, b"{\"version\": \"1.0.0\xff\"}").unwrap();
    let shown = p.display().to_string();
    assert_input_error(
        &run(&["nll", "-i", &shown]),
        &["cannot read", &shown, "valid UTF-8"],
    );
    // a directory
    let shown = dir.0.display().to_string();
    assert_input_error(&run(&["nll", "-i", &shown]), &["cannot read", &shown]);
    // nesting deeper than serde_json's recursion limit
    let p = dir.write(
        "deep.json",
        &format!("{}{}", "[".repeat(1000), "]".repeat(1000)),
    );
    let shown = p.display().to_string();
    assert_input_error(
        &run(&["nll", "-i", &shown]),
        &[&shown, "malformed JSON", "recursion limit exceeded"],
    );
    // valid JSON, but not an object
    let p = dir.write("array.json", "[1, 2]");
    let shown = p.display().to_string();
    assert_input_error(
        &run(&["nll", "-i", &shown]),
        &[&shown, "expected an object, found an array"],
    );
}

/// A tuning variable with a value it does not take stops a GPU command with exit code 2 and
/// names the variable, before any adapter is looked for.
#[test]
fn an_unusable_wgpu_setting_is_an_error() {
    let counting = example("counting.json");
    let shown = counting.display().to_string();
    for (var, value) in [
        ("NEXTSTAT_WGPU_SUBGROUPS", "sometimes"),
        ("NEXTSTAT_WGPU_CHECKS", "maybe"),
    ] {
        let o = Command::new(BIN)
            .args(["fit", "-i", &shown, "--gpu", "metal"])
            .env(var, value)
            .output()
            .expect("run nextstat");
        assert_input_error(&o, &[&format!("{var}='{value}'")]);
    }
}
