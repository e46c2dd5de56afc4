//! Run parameters: declared in a job file (`[params.NAME]` with `type`,
//! `default` and an optional `description`), given when a run is triggered
//! (`hxjobs run JOB --param NAME=VALUE`, `POST /jobs/{job}/runs
//! {"params": {…}}`), checked against the declarations, and templated into
//! tasks as `{{ params.NAME }}`. Scheduled runs use the defaults.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    String,
    Int,
    Float,
    Bool,
}

impl ParamType {
    fn name(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Int => "int",
            ParamType::Float => "float",
            ParamType::Bool => "bool",
        }
    }

    fn fits(self, v: &Value) -> bool {
        match self {
            ParamType::String => v.is_string(),
            ParamType::Int => v.is_i64(),
            ParamType::Float => v.is_number(),
            ParamType::Bool => v.is_boolean(),
        }
    }

    /// A value given as text on the command line.
    fn parse(self, s: &str) -> Option<Value> {
        match self {
            ParamType::String => Some(Value::String(s.to_string())),
            ParamType::Int => s.trim().parse::<i64>().ok().map(Value::from),
            ParamType::Float => s
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(Value::from),
            ParamType::Bool => match s.trim() {
                "true" => Some(Value::Bool(true)),
                "false" => Some(Value::Bool(false)),
                _ => None,
            },
        }
    }
}

/// A declared parameter.
#[derive(Debug, Clone, Serialize)]
pub struct Param {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ParamType,
    pub default: Value,
    pub description: String,
}

/// `[params.NAME]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawParam {
    #[serde(rename = "type")]
    kind: ParamType,
    default: toml::Value,
    #[serde(default)]
    description: String,
}

/// Checks the declarations: names of letters, digits and `_`, defaults of
/// their type.
pub(super) fn declare(raw: BTreeMap<String, RawParam>) -> Result<Vec<Param>, String> {
    let mut params = Vec::new();
    for (name, p) in raw {
        let ok_name =
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok_name {
            return Err(format!(
                "params: `{name}` is not a parameter name (letters, digits and _)"
            ));
        }
        let default =
            serde_json::to_value(&p.default).map_err(|e| format!("params.{name}.default: {e}"))?;
        if !p.kind.fits(&default) {
            return Err(format!(
                "params.{name}.default: {default} is not a {}",
                p.kind.name()
            ));
        }
        params.push(Param {
            name,
            kind: p.kind,
            default,
            description: p.description,
        });
    }
    Ok(params)
}

fn declared(params: &[Param]) -> String {
    if params.is_empty() {
        "it declares none".to_string()
    } else {
        let names: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
        format!("declared: {}", names.join(", "))
    }
}

fn find<'a>(params: &'a [Param], name: &str) -> Result<&'a Param, String> {
    params
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| format!("parameter `{name}` is not declared ({})", declared(params)))
}

/// Parameters given as JSON (the API), each checked against its
/// declaration.
pub fn check(params: &[Param], given: &Map<String, Value>) -> Result<Map<String, Value>, String> {
    for (name, value) in given {
        let p = find(params, name)?;
        if !p.kind.fits(value) {
            return Err(format!(
                "parameter `{name}` is a {}, not {value}",
                p.kind.name()
            ));
        }
    }
    Ok(given.clone())
}

/// Parameters given as `NAME=VALUE` (the command line).
pub fn parse_pairs(params: &[Param], pairs: &[String]) -> Result<Map<String, Value>, String> {
    let mut given = Map::new();
    for pair in pairs {
        let (name, text) = pair
            .split_once('=')
            .ok_or_else(|| format!("--param {pair:?}: write NAME=VALUE"))?;
        let p = find(params, name.trim())?;
        let value = p.kind.parse(text).ok_or_else(|| {
            format!(
                "parameter `{}` is a {}, not {text:?}",
                p.name,
                p.kind.name()
            )
        })?;
        given.insert(p.name.clone(), value);
    }
    Ok(given)
}

/// The values a run's tasks see: the given ones over the defaults.
pub fn effective(params: &[Param], given: &Value) -> Map<String, Value> {
    params
        .iter()
        .map(|p| {
            let v = given
                .get(&p.name)
                .filter(|v| p.kind.fits(v))
                .cloned()
                .unwrap_or_else(|| p.default.clone());
            (p.name.clone(), v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared_params() -> Vec<Param> {
        let raw: BTreeMap<String, RawParam> = toml::from_str(
            "[limit]\ntype = \"int\"\ndefault = 10\n[model]\ntype = \"string\"\ndefault = \"all\"\n",
        )
        .expect("toml");
        declare(raw).expect("declared")
    }

    #[test]
    fn given_values_are_checked_against_their_declarations() {
        let p = declared_params();
        let given = parse_pairs(&p, &["limit=25".into()]).expect("pairs");
        let e = effective(&p, &Value::Object(given));
        assert_eq!(e["limit"], 25);
        assert_eq!(e["model"], "all");
        for (pairs, says) in [
            (
                vec!["limit=ten".to_string()],
                "`limit` is a int, not \"ten\"",
            ),
            (
                vec!["nope=1".to_string()],
                "`nope` is not declared (declared: limit, model)",
            ),
            (vec!["limit".to_string()], "NAME=VALUE"),
        ] {
            let e = parse_pairs(&p, &pairs).expect_err("refused");
            assert!(e.contains(says), "{e}");
        }
        let mut json = Map::new();
        json.insert("limit".into(), Value::from("x"));
        assert!(check(&p, &json).is_err());
        let bad: BTreeMap<String, RawParam> =
            toml::from_str("[n]\ntype = \"int\"\ndefault = \"x\"\n").expect("toml");
        assert!(declare(bad)
            .expect_err("bad default")
            .contains("is not a int"));
    }
}
