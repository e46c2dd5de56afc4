//! Run parameters: declared in a job file (`[params.NAME]` with `type`,
//! `default`, an optional `description` and optional rules: `choices`,
//! `pattern` (a whole-value regular expression), `min`/`max` (numbers),
//! `max_length` (strings, 1,024 unless set)), given when a run is
//! triggered (`hxjobs run JOB --param NAME=VALUE`, `POST /jobs/{job}/runs
//! {"params": {…}}`), checked against the declarations before anything is
//! queued, and given to tasks as values (`sql`: bound; `shell`: in the
//! environment). Scheduled runs use the defaults.

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
    #[serde(flatten)]
    pub rules: Rules,
}

/// What a value must also be, beyond its type.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Rules {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub choices: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    #[serde(skip)]
    regex: Option<regex::Regex>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
}

/// A string parameter's longest value unless `max_length` says otherwise.
pub const MAX_LENGTH: usize = 1024;

impl Rules {
    /// Why `value` (already of the parameter's type) breaks a rule.
    fn broken_by(&self, kind: ParamType, value: &Value) -> Option<String> {
        if let Some(choices) = &self.choices {
            if !choices.contains(value) {
                let list: Vec<String> = choices.iter().map(Value::to_string).collect();
                return Some(format!("must be one of {}", list.join(", ")));
            }
        }
        if let Some(s) = value.as_str() {
            let max = self.max_length.unwrap_or(MAX_LENGTH);
            if s.chars().count() > max {
                return Some(format!("is longer than {max} characters"));
            }
            if let (Some(re), Some(p)) = (&self.regex, &self.pattern) {
                if !re.is_match(s) {
                    return Some(format!("must match the pattern {p:?}"));
                }
            }
        }
        if kind != ParamType::String && kind != ParamType::Bool {
            let n = value.as_f64()?;
            if self.min.is_some_and(|m| n < m) {
                return self.min.map(|m| format!("must be at least {m}"));
            }
            if self.max.is_some_and(|m| n > m) {
                return self.max.map(|m| format!("must be at most {m}"));
            }
        }
        None
    }
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
    #[serde(default)]
    choices: Option<Vec<toml::Value>>,
    #[serde(default)]
    pattern: Option<String>,
    #[serde(default)]
    min: Option<f64>,
    #[serde(default)]
    max: Option<f64>,
    #[serde(default)]
    max_length: Option<usize>,
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
        let choices = match p.choices {
            None => None,
            Some(list) => {
                let mut values = Vec::new();
                for c in list {
                    let v = serde_json::to_value(&c)
                        .map_err(|e| format!("params.{name}.choices: {e}"))?;
                    if !p.kind.fits(&v) {
                        return Err(format!(
                            "params.{name}.choices: {v} is not a {}",
                            p.kind.name()
                        ));
                    }
                    values.push(v);
                }
                Some(values)
            }
        };
        if p.pattern.is_some() && p.kind != ParamType::String {
            return Err(format!(
                "params.{name}.pattern: only a string has a pattern"
            ));
        }
        let numeric = matches!(p.kind, ParamType::Int | ParamType::Float);
        if (p.min.is_some() || p.max.is_some()) && !numeric {
            return Err(format!("params.{name}: min and max are for int and float"));
        }
        let regex = match &p.pattern {
            None => None,
            Some(pattern) => Some(
                regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| format!("params.{name}.pattern: {e}"))?,
            ),
        };
        let rules = Rules {
            choices,
            pattern: p.pattern,
            regex,
            min: p.min,
            max: p.max,
            max_length: p.max_length,
        };
        if let Some(why) = rules.broken_by(p.kind, &default) {
            return Err(format!("params.{name}.default: {default} {why}"));
        }
        params.push(Param {
            name,
            kind: p.kind,
            default,
            description: p.description,
            rules,
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
                "parameter `{name}` is a {}, not {}",
                p.kind.name(),
                shown(value)
            ));
        }
        if let Some(why) = p.rules.broken_by(p.kind, value) {
            return Err(format!("parameter `{name}` {why}"));
        }
    }
    Ok(given.clone())
}

/// A value in a message: at most 80 characters of it.
fn shown(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(80) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
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
                "parameter `{}` is a {}, not {}",
                p.name,
                p.kind.name(),
                shown(&Value::String(text.to_string()))
            )
        })?;
        if let Some(why) = p.rules.broken_by(p.kind, &value) {
            return Err(format!("parameter `{}` {why}", p.name));
        }
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

    #[test]
    fn rules_are_checked_before_anything_is_queued() {
        let raw: BTreeMap<String, RawParam> = toml::from_str(
            "[model]\ntype = \"string\"\ndefault = \"all\"\npattern = \"[a-z0-9.-]+\"\n\
             [env]\ntype = \"string\"\ndefault = \"prod\"\nchoices = [\"prod\", \"staging\"]\n\
             [limit]\ntype = \"int\"\ndefault = 10\nmin = 1\nmax = 100\n",
        )
        .expect("toml");
        let p = declare(raw).expect("declared");
        for (pair, says) in [
            ("model=x; rm -rf /", "must match the pattern"),
            ("env=dev", "must be one of \"prod\", \"staging\""),
            ("limit=0", "at least 1"),
            ("limit=101", "at most 100"),
        ] {
            let e = parse_pairs(&p, &[pair.to_string()]).expect_err(pair);
            assert!(e.contains(says), "{pair}: {e}");
        }
        let long = format!("model={}", "a".repeat(MAX_LENGTH + 1));
        assert!(parse_pairs(&p, &[long])
            .expect_err("long")
            .contains("longer than"));
        assert!(parse_pairs(&p, &["model=gpt-4.1".into(), "limit=100".into()]).is_ok());
        let bad: BTreeMap<String, RawParam> =
            toml::from_str("[n]\ntype = \"int\"\ndefault = 0\nmin = 1\n").expect("toml");
        assert!(declare(bad)
            .expect_err("default breaks min")
            .contains("at least 1"));
    }
}
