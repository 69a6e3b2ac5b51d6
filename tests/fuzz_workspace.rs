//! Property-based fuzzing of the workspace reader, the model compiler and the CPU NLL.
//!
//! Each example model is mutated at random, as a JSON value (keys deleted or renamed, values
//! replaced by other types, numbers changed to zero, negative or huge values, arrays truncated,
//! extended or with duplicated elements, names swapped) and as text (truncated or corrupted
//! bytes), then read, compiled and evaluated. Errors are fine; a panic is a bug. Whatever is
//! accepted must evaluate to a finite NLL or a clear error.
//!
//! `NEXTSTAT_FUZZ_CASES` overrides the number of cases per test (default 256).

mod common;

use nextstat::{CompileOptions, Error, HistosysCode, InterpCodes, Model, NormsysCode, Workspace};
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{json, Map, Value};

fn config() -> Config {
    let cases = std::env::var("NEXTSTAT_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

fn examples() -> Vec<(String, String, Value)> {
    common::example_models()
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let v: Value = serde_json::from_str(&text).unwrap();
            (p.display().to_string(), text, v)
        })
        .collect()
}

// ---- running a candidate ---------------------------------------------------------------------

/// Every library error must render to a non-empty message; schema errors on a value must
/// name the `<value>` source.
fn check_error(e: &Error, source: &str) {
    let msg = e.to_string();
    assert!(!msg.is_empty());
    if let Error::Invalid { location, message } = e {
        assert_eq!(location.source, source, "{msg}");
        assert!(!message.is_empty(), "{msg}");
    }
}

/// Compiles every measurement of `ws` under a few interpolation codes and evaluates the NLL
/// and gradient at points that reach the kernel's edge cases.
fn exercise(ws: &Workspace) {
    let mut measurements: Vec<Option<String>> = vec![None];
    measurements.extend(ws.measurements.iter().map(|m| Some(m.name.clone())));
    measurements.push(Some("no such measurement".into()));
    let codes = [
        InterpCodes::default(),
        InterpCodes {
            normsys: NormsysCode::Code1,
            histosys: HistosysCode::Code0,
        },
        InterpCodes {
            normsys: NormsysCode::Code4,
            histosys: HistosysCode::Code2,
        },
    ];
    for measurement in measurements {
        for interp in codes {
            let opts = CompileOptions {
                measurement: measurement.clone(),
                interp,
            };
            match Model::from_workspace(ws, &opts) {
                Ok(model) => evaluate(&model),
                Err(e) => check_error(&e, &ws.source),
            }
        }
    }
}

fn evaluate(model: &Model) {
    let n = model.n_params();
    assert_eq!(model.par_names().len(), n);
    assert!(model.poi < n);
    for name in model.par_names() {
        assert!(model.param_index(name).is_ok());
    }
    let init = model.init();
    let bounds = model.bounds();
    let mut points = vec![init.clone()];
    points.push(bounds.iter().map(|b| b.0).collect());
    points.push(bounds.iter().map(|b| b.1).collect());
    points.push(vec![0.0; n]);
    let mut poi_zero = init.clone();
    poi_zero[model.poi] = 0.0;
    points.push(poi_zero);
    points.push(init.iter().map(|x| -x - 1.5).collect());
    for pars in &points {
        match model.nll(pars) {
            Ok(v) => assert!(v.is_finite()),
            Err(e) => check_error(&e, &model.source),
        }
        match model.nll_grad(pars) {
            Ok((v, g)) => {
                assert!(v.is_finite());
                assert_eq!(g.len(), n);
            }
            Err(e) => check_error(&e, &model.source),
        }
    }
    // wrong-length parameter vectors are errors, not panics
    assert!(model.nll(&init[..n.saturating_sub(1)]).is_err());
    let mut long = init.clone();
    long.push(1.0);
    assert!(model.nll_grad(&long).is_err());
}

fn run_value(v: &Value) {
    match Workspace::from_value(v) {
        Ok(ws) => exercise(&ws),
        Err(e) => check_error(&e, "<value>"),
    }
}

fn run_text(text: &str) {
    match Workspace::from_json_str(text) {
        Ok(ws) => exercise(&ws),
        Err(e) => check_error(&e, "<string>"),
    }
}

// ---- value mutations -------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

/// Paths of every node (the root is the empty path), in document order.
fn paths(v: &Value) -> Vec<Vec<Step>> {
    fn walk(v: &Value, here: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
        out.push(here.clone());
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    here.push(Step::Key(k.clone()));
                    walk(x, here, out);
                    here.pop();
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    here.push(Step::Index(i));
                    walk(x, here, out);
                    here.pop();
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

fn node_mut<'v>(v: &'v mut Value, path: &[Step]) -> &'v mut Value {
    path.iter().fold(v, |v, s| match s {
        Step::Key(k) => v.get_mut(k.as_str()).unwrap(),
        Step::Index(i) => v.get_mut(*i).unwrap(),
    })
}

/// The `pick`-th path (modulo their number) whose node satisfies `want`.
fn pick_path(v: &Value, pick: usize, want: impl Fn(&[Step], &Value) -> bool) -> Option<Vec<Step>> {
    let all: Vec<Vec<Step>> = paths(v)
        .into_iter()
        .filter(|p| {
            let mut v2 = v;
            for s in p {
                v2 = match s {
                    Step::Key(k) => &v2[k.as_str()],
                    Step::Index(i) => &v2[*i],
                };
            }
            want(p, v2)
        })
        .collect();
    if all.is_empty() {
        None
    } else {
        Some(all[pick % all.len()].clone())
    }
}

/// Names and words that occur in workspaces, so swapped strings collide in interesting ways.
const WORDS: [&str; 24] = [
    "",
    "mu",
    "lumi",
    "SR",
    "CR",
    "signal",
    "ttbar",
    "jes",
    "staterror_SR",
    "bkg_mc_stat",
    "cr_shape",
    "normfactor",
    "normsys",
    "histosys",
    "shapesys",
    "staterror",
    "shapefactor",
    "name",
    "data",
    "type",
    "hi_data",
    "lo_data",
    "1.0.0",
    "é\u{0}\"\\",
];

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (0..WORDS.len()).prop_map(|i| WORDS[i].to_string()),
        1 => "[a-z_\\[\\]0-9]{0,8}",
    ]
}

/// Finite floats that stress the model: zero, signs, tiny, huge, ordinary.
fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(-0.0),
        Just(1.0),
        Just(-1.0),
        Just(1e-300),
        Just(-1e-300),
        Just(f64::MIN_POSITIVE),
        Just(1e300),
        Just(-1e300),
        Just(f64::MAX),
        Just(f64::MIN),
        -10.0..10.0f64,
        -1e6..1e6f64,
        proptest::num::f64::NORMAL,
    ]
}

fn number(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// A small random JSON value of any type.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        float().prop_map(number),
        any::<i64>().prop_map(|i| json!(i)),
        Just(json!(u64::MAX)),
        word().prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((word(), inner), 0..3)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

#[derive(Clone, Debug)]
enum Mutation {
    DeleteKey(usize),
    Replace(usize, Value),
    SetNumber(usize, f64),
    Truncate(usize, usize),
    Extend(usize, Vec<Value>),
    RenameKey(usize, String),
    DuplicateElement(usize, usize, usize),
    SetString(usize, String),
    /// Copies one modifier into another sample's modifier list (possibly in another channel).
    Transplant(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let pick = any::<usize>();
    prop_oneof![
        2 => pick.prop_map(Mutation::DeleteKey),
        2 => (pick, json_value()).prop_map(|(p, v)| Mutation::Replace(p, v)),
        4 => (pick, float()).prop_map(|(p, x)| Mutation::SetNumber(p, x)),
        2 => (pick, any::<usize>()).prop_map(|(p, n)| Mutation::Truncate(p, n)),
        2 => (pick, prop::collection::vec(json_value(), 1..3))
            .prop_map(|(p, v)| Mutation::Extend(p, v)),
        1 => (pick, word()).prop_map(|(p, k)| Mutation::RenameKey(p, k)),
        2 => (pick, any::<usize>(), any::<usize>())
            .prop_map(|(p, i, j)| Mutation::DuplicateElement(p, i, j)),
        3 => (pick, word()).prop_map(|(p, s)| Mutation::SetString(p, s)),
        2 => (pick, any::<usize>()).prop_map(|(p, q)| Mutation::Transplant(p, q)),
    ]
}

fn parent_is_object(p: &[Step]) -> bool {
    matches!(p.last(), Some(Step::Key(_)))
}

fn apply(v: &mut Value, m: &Mutation) {
    match m {
        Mutation::DeleteKey(pick) => {
            if let Some(p) = pick_path(v, *pick, |p, _| parent_is_object(p)) {
                let Some(Step::Key(k)) = p.last() else {
                    unreachable!()
                };
                node_mut(v, &p[..p.len() - 1])
                    .as_object_mut()
                    .unwrap()
                    .remove(k);
            }
        }
        Mutation::Replace(pick, new) => {
            if let Some(p) = pick_path(v, *pick, |_, _| true) {
                let node = node_mut(v, &p);
                // prefer a value of another type
                if std::mem::discriminant(node) == std::mem::discriminant(new) {
                    *node = match node {
                        Value::Null => json!(false),
                        _ => Value::Null,
                    };
                } else {
                    *node = new.clone();
                }
            }
        }
        Mutation::SetNumber(pick, x) => {
            if let Some(p) = pick_path(v, *pick, |_, x| x.is_number()) {
                *node_mut(v, &p) = number(*x);
            }
        }
        Mutation::Truncate(pick, n) => {
            if let Some(p) = pick_path(v, *pick, |_, x| x.is_array()) {
                let a = node_mut(v, &p).as_array_mut().unwrap();
                let keep = n % (a.len() + 1);
                a.truncate(keep);
            }
        }
        Mutation::Extend(pick, items) => {
            if let Some(p) = pick_path(v, *pick, |_, x| x.is_array()) {
                let a = node_mut(v, &p).as_array_mut().unwrap();
                // half the time extend with copies of the last element (stays well typed)
                match a.last().cloned() {
                    Some(last) if items.len() == 1 => a.push(last),
                    _ => a.extend(items.iter().cloned()),
                }
            }
        }
        Mutation::RenameKey(pick, key) => {
            if let Some(p) = pick_path(v, *pick, |p, _| parent_is_object(p)) {
                let Some(Step::Key(k)) = p.last() else {
                    unreachable!()
                };
                let obj = node_mut(v, &p[..p.len() - 1]).as_object_mut().unwrap();
                if let Some(x) = obj.remove(k) {
                    obj.insert(key.clone(), x);
                }
            }
        }
        Mutation::DuplicateElement(pick, i, j) => {
            if let Some(p) = pick_path(v, *pick, |_, x| x.as_array().is_some_and(|a| !a.is_empty()))
            {
                let a = node_mut(v, &p).as_array_mut().unwrap();
                let x = a[i % a.len()].clone();
                let at = j % (a.len() + 1);
                a.insert(at, x);
            }
        }
        Mutation::SetString(pick, s) => {
            if let Some(p) = pick_path(v, *pick, |_, x| x.is_string()) {
                *node_mut(v, &p) = Value::String(s.clone());
            }
        }
        Mutation::Transplant(from, to) => {
            let is_mods = |p: &[Step], x: &Value| {
                x.is_array() && p.last() == Some(&Step::Key("modifiers".into()))
            };
            let is_mod = |p: &[Step], _: &Value| {
                p.len() >= 2 && p[p.len() - 2] == Step::Key("modifiers".into())
            };
            if let (Some(src), Some(dst)) =
                (pick_path(v, *from, is_mod), pick_path(v, *to, is_mods))
            {
                let m = node_mut(v, &src).clone();
                node_mut(v, &dst).as_array_mut().unwrap().push(m);
            }
        }
    }
}

// ---- byte mutations --------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum ByteMutation {
    Truncate(usize),
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
}

fn byte_mutation() -> impl Strategy<Value = ByteMutation> {
    let special = prop_oneof![
        any::<u8>(),
        prop::sample::select(b"{}[]\",:-+.eE0123456789 \n\\ntfaluN".to_vec()),
    ];
    prop_oneof![
        1 => any::<usize>().prop_map(ByteMutation::Truncate),
        3 => (any::<usize>(), special.clone()).prop_map(|(i, b)| ByteMutation::Set(i, b)),
        2 => (any::<usize>(), prop::collection::vec(special, 1..6))
            .prop_map(|(i, b)| ByteMutation::Insert(i, b)),
        2 => (any::<usize>(), 1..20usize).prop_map(|(i, n)| ByteMutation::Delete(i, n)),
    ]
}

fn apply_bytes(b: &mut Vec<u8>, m: &ByteMutation) {
    let len = b.len();
    match m {
        ByteMutation::Truncate(i) => b.truncate(i % (len + 1)),
        ByteMutation::Set(i, x) if len > 0 => b[i % len] = *x,
        ByteMutation::Set(..) => {}
        ByteMutation::Insert(i, xs) => {
            let at = i % (len + 1);
            b.splice(at..at, xs.iter().copied());
        }
        ByteMutation::Delete(i, n) => {
            let at = i % (len + 1);
            b.drain(at..(at + n).min(len));
        }
    }
}

// ---- the properties --------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// One to six structural mutations of an example value never panic.
    #[test]
    fn mutated_values_never_panic(
        which in 0..3usize,
        muts in prop::collection::vec(mutation(), 1..=6),
    ) {
        let ex = examples();
        let mut v = ex[which % ex.len()].2.clone();
        for m in &muts {
            apply(&mut v, m);
        }
        run_value(&v);
    }

    /// A single number set to an extreme value: mostly still a valid workspace, so this
    /// reaches the compiler and the kernel with zero, negative and huge yields and settings.
    #[test]
    fn extreme_numbers_never_panic(
        which in 0..3usize,
        muts in prop::collection::vec((any::<usize>(), float()), 1..=3),
    ) {
        let ex = examples();
        let mut v = ex[which % ex.len()].2.clone();
        for (pick, x) in &muts {
            apply(&mut v, &Mutation::SetNumber(*pick, *x));
        }
        run_value(&v);
    }

    /// Names and types swapped for others from the same workspaces: collisions, shared
    /// modifiers, changed modifier types.
    #[test]
    fn swapped_strings_never_panic(
        which in 0..3usize,
        muts in prop::collection::vec((any::<usize>(), word()), 1..=3),
    ) {
        let ex = examples();
        let mut v = ex[which % ex.len()].2.clone();
        for (pick, s) in &muts {
            apply(&mut v, &Mutation::SetString(*pick, s.clone()));
        }
        run_value(&v);
    }

    /// Modifiers copied between samples and channels: names shared across channels of
    /// different bin counts, per-bin modifiers on samples that did not have them, and the
    /// schema and compiler checks on that sharing.
    #[test]
    fn transplanted_modifiers_never_panic(
        which in 0..3usize,
        muts in prop::collection::vec((any::<usize>(), any::<usize>()), 1..=4),
        numbers in prop::collection::vec((any::<usize>(), float()), 0..=2),
    ) {
        let ex = examples();
        let mut v = ex[which % ex.len()].2.clone();
        for (from, to) in &muts {
            apply(&mut v, &Mutation::Transplant(*from, *to));
        }
        for (pick, x) in &numbers {
            apply(&mut v, &Mutation::SetNumber(*pick, *x));
        }
        run_value(&v);
    }

    /// Truncated and corrupted JSON text never panics, and malformed text reports a position.
    #[test]
    fn corrupted_text_never_panics(
        which in 0..3usize,
        muts in prop::collection::vec(byte_mutation(), 1..=4),
    ) {
        let ex = examples();
        let mut bytes = ex[which % ex.len()].1.clone().into_bytes();
        for m in &muts {
            apply_bytes(&mut bytes, m);
        }
        let text = String::from_utf8_lossy(&bytes);
        if let Err(Error::Json { source_name, line, .. }) = Workspace::from_json_str(&text) {
            prop_assert_eq!(source_name, "<string>");
            prop_assert!(line >= 1);
        }
        run_text(&text);
    }
}

/// The unmutated examples read, compile and evaluate (the harness itself works).
#[test]
fn examples_pass_the_harness() {
    for (name, text, v) in examples() {
        let ws = Workspace::from_value(&v).unwrap_or_else(|e| panic!("{name}: {e}"));
        exercise(&ws);
        run_text(&text);
        let model = Model::from_workspace(&ws, &CompileOptions::default()).unwrap();
        assert!(model.nll(&model.init()).unwrap().is_finite(), "{name}");
    }
}

// ---- fixed cases found while fuzzing, and edge cases the random search rarely builds --------

/// A UTF-8 byte-order mark before the JSON is skipped (it used to give "expected value at
/// line 1, column 1", pointing at a visible '{').
#[test]
fn byte_order_mark_is_skipped() {
    for (name, text, v) in examples() {
        let ws = Workspace::from_json_str(&format!("\u{feff}{text}"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut expected = Workspace::from_value(&v).unwrap();
        expected.source = "<string>".into();
        assert_eq!(ws, expected);
    }
}

/// Deeply nested JSON is a malformed-JSON error (serde_json's recursion limit), not a stack
/// overflow.
#[test]
fn deep_nesting_is_an_error() {
    let text = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    match Workspace::from_json_str(&text) {
        Err(Error::Json { message, .. }) => assert!(message.contains("recursion limit")),
        other => panic!("{other:?}"),
    }
}

fn two_channel_workspace(sr_mods: Value, cr_mods: Value, sr_bins: usize, cr_bins: usize) -> Value {
    json!({
        "version": "1.0.0",
        "channels": [
            {"name": "SR", "samples": [
                {"name": "sig", "data": vec![2.0; sr_bins],
                 "modifiers": [{"name": "mu", "type": "normfactor", "data": null}]},
                {"name": "bkg", "data": vec![10.0; sr_bins], "modifiers": sr_mods}]},
            {"name": "CR", "samples": [
                {"name": "bkg", "data": vec![50.0; cr_bins], "modifiers": cr_mods}]}
        ],
        "observations": [
            {"name": "SR", "data": vec![12.0; sr_bins]},
            {"name": "CR", "data": vec![49.0; cr_bins]}
        ],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}]
    })
}

/// A shapefactor shared by channels of different bin counts: pyhf sizes it from the first
/// channel in sorted order (CR before SR). A larger later channel is an error (pyhf would
/// silently scale its extra bins by parameter 0); a smaller one uses the first elements.
#[test]
fn shared_shapefactor_with_different_bin_counts() {
    let sf = json!([{"name": "sf", "type": "shapefactor", "data": null}]);
    let ok = two_channel_workspace(sf.clone(), sf.clone(), 2, 3);
    let model = Model::from_workspace(
        &Workspace::from_value(&ok).unwrap(),
        &CompileOptions::default(),
    )
    .unwrap();
    assert_eq!(model.par_names(), ["mu", "sf[0]", "sf[1]", "sf[2]"]);
    evaluate(&model);
    let (_, g) = model.nll_grad(&model.init()).unwrap();
    assert!(g.iter().all(|x| x.is_finite()));

    let bad = two_channel_workspace(sf.clone(), sf, 4, 3);
    let e = Model::from_workspace(
        &Workspace::from_value(&bad).unwrap(),
        &CompileOptions::default(),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("shapefactor 'sf' has 3 parameters from its first use"),
        "{e}"
    );
}

/// A staterror shared by two channels is one set over the bins of both.
#[test]
fn shared_staterror_across_channels() {
    let st = |n: usize| json!([{"name": "stat", "type": "staterror", "data": vec![1.0; n]}]);
    let v = two_channel_workspace(st(2), st(3), 2, 3);
    let model = Model::from_workspace(
        &Workspace::from_value(&v).unwrap(),
        &CompileOptions::default(),
    )
    .unwrap();
    assert_eq!(model.par_names().len(), 1 + 5);
    evaluate(&model);
}
