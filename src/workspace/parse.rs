//! Conversion of a JSON value into a [`Workspace`], checking pyhf's schema 1.0.0 by hand.
//!
//! Structural checks live here (types, required and unknown keys, finite numbers,
//! non-negative observations, duplicate names); checks that need the whole model (bin counts,
//! the POI, shared modifiers) live in the model compiler.

use super::*;
use serde_json::{Map, Value};

/// A JSON path under construction, with names where the schema has them.
#[derive(Clone)]
struct Path<'a> {
    source: &'a str,
    text: String,
}

impl<'a> Path<'a> {
    fn root(source: &'a str) -> Self {
        Path {
            source,
            text: String::new(),
        }
    }
    fn join(&self, part: impl AsRef<str>) -> Self {
        let text = if self.text.is_empty() {
            part.as_ref().to_string()
        } else {
            format!("{} / {}", self.text, part.as_ref())
        };
        Path {
            source: self.source,
            text,
        }
    }
    fn key(&self, key: &str) -> Self {
        self.join(key)
    }
    fn err(&self, message: impl Into<String>) -> Error {
        Error::invalid(self.source, self.text.clone(), message)
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn object<'v>(v: &'v Value, p: &Path) -> Result<&'v Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| p.err(format!("expected an object, found {}", json_type(v))))
}

/// Rejects keys outside `allowed` (pyhf's schema has `additionalProperties: false`).
fn check_keys(map: &Map<String, Value>, allowed: &[&str], p: &Path) -> Result<()> {
    for k in map.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(p.err(format!(
                "unknown key '{k}' (allowed here: {})",
                allowed.join(", ")
            )));
        }
    }
    Ok(())
}

fn required<'v>(map: &'v Map<String, Value>, key: &str, p: &Path) -> Result<&'v Value> {
    map.get(key)
        .ok_or_else(|| p.err(format!("missing required key '{key}'")))
}

fn string(v: &Value, p: &Path) -> Result<String> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| p.err(format!("expected a string, found {}", json_type(v))))
}

fn array<'v>(v: &'v Value, p: &Path) -> Result<&'v Vec<Value>> {
    v.as_array()
        .ok_or_else(|| p.err(format!("expected an array, found {}", json_type(v))))
}

fn number(v: &Value, p: &Path) -> Result<f64> {
    let x = v
        .as_f64()
        .ok_or_else(|| p.err(format!("expected a number, found {}", json_type(v))))?;
    if !x.is_finite() {
        return Err(p.err(format!("number {x} is not finite")));
    }
    Ok(x)
}

/// A non-empty array of finite numbers.
fn numbers(v: &Value, p: &Path) -> Result<Vec<f64>> {
    let items = array(v, p)?;
    if items.is_empty() {
        return Err(p.err("expected at least one number, found an empty array"));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, x)| number(x, &p.join(format!("[{i}]"))))
        .collect()
}

/// The path of item `i` of the array under `key`, named when the item has a name, so the
/// path reads like the analysis.
fn item_path<'a>(p: &Path<'a>, key: &str, i: usize, item: &Value) -> Path<'a> {
    match item.get("name").and_then(Value::as_str) {
        Some(n) => p.join(format!("{key}[{i}] '{n}'")),
        None => p.join(format!("{key}[{i}]")),
    }
}

pub(super) fn workspace(v: &Value, source: &str) -> Result<Workspace> {
    let p = Path::root(source);
    let map = object(v, &p)?;
    check_keys(
        map,
        &["channels", "measurements", "observations", "version"],
        &p,
    )?;
    let version = string(required(map, "version", &p)?, &p.key("version"))?;
    if version != "1.0.0" {
        return Err(p.key("version").err(format!(
            "unsupported schema version '{version}' (expected '1.0.0')"
        )));
    }
    let channels = list(map, "channels", &p, channel)?;
    let observations = list(map, "observations", &p, observation)?;
    let measurements = list(map, "measurements", &p, measurement)?;
    unique_names(
        channels.iter().map(|c| c.name.as_str()),
        &p.key("channels"),
        "channel",
    )?;
    unique_names(
        observations.iter().map(|o| o.name.as_str()),
        &p.key("observations"),
        "observation",
    )?;
    unique_names(
        measurements.iter().map(|m| m.name.as_str()),
        &p.key("measurements"),
        "measurement",
    )?;
    Ok(Workspace {
        source: source.to_string(),
        channels,
        observations,
        measurements,
        version,
    })
}

/// A required, non-empty array under `key`, each item converted by `f`.
fn list<T>(
    map: &Map<String, Value>,
    key: &str,
    p: &Path,
    f: impl Fn(&Value, &Path) -> Result<T>,
) -> Result<Vec<T>> {
    let items = array(required(map, key, p)?, &p.key(key))?;
    if items.is_empty() {
        return Err(p.key(key).err("must not be empty"));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| f(item, &item_path(p, key, i, item)))
        .collect()
}

fn unique_names<'s>(names: impl Iterator<Item = &'s str>, p: &Path, what: &str) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for n in names {
        if !seen.insert(n) {
            return Err(p.err(format!("duplicate {what} name '{n}'")));
        }
    }
    Ok(())
}

fn channel(v: &Value, p: &Path) -> Result<Channel> {
    let map = object(v, p)?;
    check_keys(map, &["name", "samples"], p)?;
    let name = string(required(map, "name", p)?, &p.key("name"))?;
    let samples = list(map, "samples", p, sample)?;
    unique_names(
        samples.iter().map(|s| s.name.as_str()),
        &p.key("samples"),
        "sample",
    )?;
    Ok(Channel { name, samples })
}

fn sample(v: &Value, p: &Path) -> Result<Sample> {
    let map = object(v, p)?;
    check_keys(map, &["name", "data", "modifiers"], p)?;
    let name = string(required(map, "name", p)?, &p.key("name"))?;
    let data = numbers(required(map, "data", p)?, &p.key("data"))?;
    let mods = array(required(map, "modifiers", p)?, &p.key("modifiers"))?;
    let modifiers = mods
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let ty = m.get("type").and_then(Value::as_str).unwrap_or("?");
            let name = m.get("name").and_then(Value::as_str).unwrap_or("?");
            modifier(m, &p.join(format!("modifiers[{i}] '{name}' ({ty})")))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut seen = std::collections::HashSet::new();
    for (i, m) in modifiers.iter().enumerate() {
        if !seen.insert((m.name.as_str(), m.kind.type_name())) {
            return Err(p.join(format!("modifiers[{i}] '{}'", m.name)).err(format!(
                "duplicate {} modifier '{}' in this sample",
                m.kind.type_name(),
                m.name
            )));
        }
    }
    Ok(Sample {
        name,
        data,
        modifiers,
    })
}

const MODIFIER_TYPES: [&str; 7] = [
    "normfactor",
    "shapefactor",
    "lumi",
    "normsys",
    "histosys",
    "shapesys",
    "staterror",
];

fn modifier(v: &Value, p: &Path) -> Result<Modifier> {
    let map = object(v, p)?;
    check_keys(map, &["name", "type", "data"], p)?;
    let name = string(required(map, "name", p)?, &p.key("name"))?;
    let ty = string(required(map, "type", p)?, &p.key("type"))?;
    let data = required(map, "data", p)?;
    let dp = p.key("data");
    let null = |what: &str| -> Result<()> {
        if data.is_null() {
            Ok(())
        } else {
            Err(dp.err(format!(
                "a {what} modifier takes data null, found {}",
                json_type(data)
            )))
        }
    };
    let kind = match ty.as_str() {
        "normfactor" => {
            null("normfactor")?;
            ModifierKind::NormFactor
        }
        "shapefactor" => {
            null("shapefactor")?;
            ModifierKind::ShapeFactor
        }
        "lumi" => {
            null("lumi")?;
            if name != "lumi" {
                return Err(p.key("name").err(format!(
                    "a lumi modifier must be named 'lumi' (pyhf's schema), found '{name}'"
                )));
            }
            ModifierKind::Lumi
        }
        "normsys" => {
            let m = object(data, &dp)?;
            check_keys(m, &["hi", "lo"], &dp)?;
            let hi = number(required(m, "hi", &dp)?, &dp.key("hi"))?;
            let lo = number(required(m, "lo", &dp)?, &dp.key("lo"))?;
            ModifierKind::NormSys { hi, lo }
        }
        "histosys" => {
            let m = object(data, &dp)?;
            check_keys(m, &["hi_data", "lo_data"], &dp)?;
            let hi_data = numbers(required(m, "hi_data", &dp)?, &dp.key("hi_data"))?;
            let lo_data = numbers(required(m, "lo_data", &dp)?, &dp.key("lo_data"))?;
            ModifierKind::HistoSys { hi_data, lo_data }
        }
        "shapesys" => ModifierKind::ShapeSys {
            uncertainties: numbers(data, &dp)?,
        },
        "staterror" => ModifierKind::StatError {
            uncertainties: numbers(data, &dp)?,
        },
        other => {
            return Err(p.key("type").err(format!(
                "unknown modifier type '{other}' (known: {})",
                MODIFIER_TYPES.join(", ")
            )))
        }
    };
    Ok(Modifier { name, kind })
}

fn observation(v: &Value, p: &Path) -> Result<Observation> {
    let map = object(v, p)?;
    check_keys(map, &["name", "data"], p)?;
    let name = string(required(map, "name", p)?, &p.key("name"))?;
    let data = numbers(required(map, "data", p)?, &p.key("data"))?;
    if let Some((i, x)) = data.iter().enumerate().find(|(_, x)| **x < 0.0) {
        return Err(p
            .key(&format!("data[{i}]"))
            .err(format!("observed count {x} is negative")));
    }
    Ok(Observation { name, data })
}

fn measurement(v: &Value, p: &Path) -> Result<Measurement> {
    let map = object(v, p)?;
    check_keys(map, &["name", "config"], p)?;
    let name = string(required(map, "name", p)?, &p.key("name"))?;
    let cp = p.key("config");
    let config = object(required(map, "config", p)?, &cp)?;
    check_keys(config, &["poi", "parameters"], &cp)?;
    let poi = string(required(config, "poi", &cp)?, &cp.key("poi"))?;
    let pars = array(required(config, "parameters", &cp)?, &cp.key("parameters"))?;
    let parameters = pars
        .iter()
        .enumerate()
        .map(|(i, item)| parameter_config(item, &item_path(&cp, "parameters", i, item)))
        .collect::<Result<Vec<_>>>()?;
    unique_names(
        parameters.iter().map(|c| c.name.as_str()),
        &cp.key("parameters"),
        "parameter config",
    )?;
    Ok(Measurement {
        name,
        poi,
        parameters,
    })
}

fn parameter_config(v: &Value, p: &Path) -> Result<ParameterConfig> {
    let map = object(v, p)?;
    check_keys(
        map,
        &[
            "name", "inits", "bounds", "auxdata", "factors", "sigmas", "fixed",
        ],
        p,
    )?;
    let opt_numbers = |key: &str| -> Result<Option<Vec<f64>>> {
        map.get(key).map(|v| numbers(v, &p.key(key))).transpose()
    };
    let bounds = match map.get("bounds") {
        None => None,
        Some(v) => {
            let bp = p.key("bounds");
            let items = array(v, &bp)?;
            if items.is_empty() {
                return Err(bp.err("expected at least one [low, high] pair"));
            }
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let ip = bp.join(format!("[{i}]"));
                let pair = numbers(item, &ip)?;
                if pair.len() != 2 {
                    return Err(ip.err(format!(
                        "expected a [low, high] pair, found {} numbers",
                        pair.len()
                    )));
                }
                if pair[0] > pair[1] {
                    return Err(ip.err(format!(
                        "lower bound {} is above upper bound {}",
                        pair[0], pair[1]
                    )));
                }
                out.push([pair[0], pair[1]]);
            }
            Some(out)
        }
    };
    let fixed = match map.get("fixed") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(other) => {
            return Err(p
                .key("fixed")
                .err(format!("expected a boolean, found {}", json_type(other))))
        }
    };
    Ok(ParameterConfig {
        name: string(required(map, "name", p)?, &p.key("name"))?,
        inits: opt_numbers("inits")?,
        bounds,
        auxdata: opt_numbers("auxdata")?,
        factors: opt_numbers("factors")?,
        sigmas: opt_numbers("sigmas")?,
        fixed,
    })
}
