//! A model's own chat template: the Jinja `chat_template` of its `tokenizer_config.json`,
//! `chat_template.jinja` or GGUF `tokenizer.chat_template`, rendered as transformers'
//! `apply_chat_template` renders it.
//!
//! transformers renders with Jinja2 (`trim_blocks`, `lstrip_blocks`, loop controls), Python's
//! string methods, a `tojson` filter that is `json.dumps`, and the functions
//! `raise_exception` and `strftime_now`. `minijinja` (with `minijinja-contrib`'s Python
//! methods) is that environment here; `tojson` and `strftime_now` are this file's, because
//! minijinja's `tojson` writes compact, HTML-escaped JSON where `json.dumps` writes `", "` and
//! `": "` separators and leaves `<`, `>`, `&` and `'` as they are.

use std::path::Path;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::Serde;
use minijinja::{Environment, Error, ErrorKind, Value};
use serde::Serialize;

use crate::error::GenerateError;

/// One message of a chat, as `apply_chat_template` takes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message of `role`.
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Self { role: role.into(), content: content.into() }
    }
}

/// A compiled chat template with the special tokens it may refer to (`bos_token`,
/// `eos_token`).
#[derive(Debug)]
pub struct ChatTemplate {
    source: String,
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

/// The name the template is stored under in the environment.
const NAME: &str = "chat_template";

impl ChatTemplate {
    /// Compiles `source`; a syntax error is reported with its line.
    pub fn new(source: &str, bos_token: Option<String>, eos_token: Option<String>) -> Result<Self, GenerateError> {
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).build().map_err(template_error)?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned(NAME, source.to_string()).map_err(template_error)?;
        Ok(Self {
            source: source.to_string(),
            env,
            bos_token: bos_token.unwrap_or_default(),
            eos_token: eos_token.unwrap_or_default(),
        })
    }

    /// The template's Jinja text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The template of a Hub model folder: `chat_template.jinja`, else `tokenizer_config.json`'s
    /// `chat_template` (a string, or a list of named templates of which `default` is taken),
    /// with that file's `bos_token` and `eos_token`; `None` when the folder has neither.
    pub fn from_model_dir(dir: impl AsRef<Path>) -> Result<Option<Self>, GenerateError> {
        let dir = dir.as_ref();
        let config_path = dir.join("tokenizer_config.json");
        let config: serde_json::Value = match std::fs::read_to_string(&config_path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| GenerateError::ChatTemplate { reason: format!("{}: {e}", config_path.display()) })?,
            Err(_) => serde_json::Value::Null,
        };
        let token = |key: &str| match &config[key] {
            serde_json::Value::String(s) => Some(s.clone()),
            // An `AddedToken` written out: {"content": "<s>", ...}.
            serde_json::Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(str::to_string),
            _ => None,
        };
        let jinja = dir.join("chat_template.jinja");
        let source = if jinja.is_file() {
            Some(
                std::fs::read_to_string(&jinja)
                    .map_err(|e| GenerateError::ChatTemplate { reason: format!("{}: {e}", jinja.display()) })?,
            )
        } else {
            match &config["chat_template"] {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Array(named) => named
                    .iter()
                    .find(|t| t["name"] == "default")
                    .and_then(|t| t["template"].as_str())
                    .map(str::to_string),
                _ => None,
            }
        };
        source.map(|s| Self::new(&s, token("bos_token"), token("eos_token"))).transpose()
    }

    /// The prompt for `messages`, ending with the assistant's header when
    /// `add_generation_prompt` (the answer is generated from there).
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String, GenerateError> {
        self.render_with(messages, add_generation_prompt, &serde_json::Map::new())
    }

    /// [`Self::render`] with more variables for the template (as `apply_chat_template`'s
    /// keyword arguments: `enable_thinking`, ...).
    pub fn render_with(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        extra: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, GenerateError> {
        let mut context: std::collections::BTreeMap<String, Value> =
            extra.iter().map(|(k, v)| (k.clone(), Value::from(Serde(v)))).collect();
        context.insert("messages".into(), Value::from(Serde(messages)));
        context.insert("add_generation_prompt".into(), Value::from(add_generation_prompt));
        context.insert("bos_token".into(), Value::from(self.bos_token.clone()));
        context.insert("eos_token".into(), Value::from(self.eos_token.clone()));
        let template = self.env.get_template(NAME).map_err(template_error)?;
        template.render(Value::from(context)).map_err(template_error)
    }
}

/// A template error, with the line it names and the message of `raise_exception`.
fn template_error(e: Error) -> GenerateError {
    let mut reason = e.to_string();
    if let Some(line) = e.line() {
        reason = format!("{reason} (template line {line})");
    }
    GenerateError::ChatTemplate { reason }
}

/// `raise_exception(message)`: the template refuses the messages.
fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// `x | tojson(indent=None)` as Python's `json.dumps(x, ensure_ascii=False, indent=indent)`.
fn tojson(value: Value, kwargs: minijinja::value::Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    python_json(&value, indent, 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

/// Writes `v` as `json.dumps` does: keys in their order, `", "` and `": "` separators, or with
/// `indent` one item a line.
fn python_json(v: &Value, indent: Option<usize>, depth: usize, out: &mut String) -> Result<(), Error> {
    use minijinja::value::ValueKind;
    let quoted = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    let (open, close, is_map) = match v.kind() {
        ValueKind::Seq | ValueKind::Iterable => ('[', ']', false),
        ValueKind::Map => ('{', '}', true),
        ValueKind::None | ValueKind::Undefined => {
            out.push_str("null");
            return Ok(());
        }
        ValueKind::Bool => {
            out.push_str(if v.is_true() { "true" } else { "false" });
            return Ok(());
        }
        ValueKind::Number => {
            match (v.as_i64(), f64::try_from(v.clone())) {
                (Some(i), _) if v.is_integer() => out.push_str(&i.to_string()),
                (_, Ok(f)) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e16 => out.push_str(&format!("{f:.1}")),
                (_, Ok(f)) => out.push_str(&f.to_string()),
                _ => out.push_str(&v.to_string()),
            }
            return Ok(());
        }
        _ => {
            out.push_str(&quoted(&v.to_string()));
            return Ok(());
        }
    };
    let keys: Vec<Value> = v.try_iter()?.collect();
    out.push(open);
    if keys.is_empty() {
        out.push(close);
        return Ok(());
    }
    let newline = |out: &mut String, depth: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * depth));
        }
    };
    for (i, item) in keys.iter().enumerate() {
        if i > 0 {
            out.push_str(if indent.is_some() { "," } else { ", " });
        }
        newline(out, depth + 1);
        if is_map {
            out.push_str(&quoted(&item.to_string()));
            out.push_str(": ");
            python_json(&v.get_item(item)?, indent, depth + 1, out)?;
        } else {
            python_json(item, indent, depth + 1, out)?;
        }
    }
    newline(out, depth);
    out.push(close);
    Ok(())
}

/// `strftime_now(format)`: the current UTC time in C's `strftime` format (`%Y %m %d %b %B %H
/// %M %S %%`).
fn strftime_now(format: String) -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    format_utc(secs, &format)
}

/// `format` of the UTC time `secs` after 1970 (days to dates as in Howard Hinnant's
/// `civil_from_days`).
fn format_utc(secs: i64, format: &str) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('b') => out.push_str(&MONTHS[month as usize - 1][..3]),
            Some('B') => out.push_str(MONTHS[month as usize - 1]),
            Some('H') => out.push_str(&format!("{:02}", rem / 3600)),
            Some('M') => out.push_str(&format!("{:02}", rem / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", rem % 60)),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_those_of_the_calendar() {
        assert_eq!(format_utc(0, "%d %b %Y %H:%M:%S"), "01 Jan 1970 00:00:00");
        // 2024-02-29 12:34:56 UTC, a leap day.
        assert_eq!(format_utc(1_709_210_096, "%Y-%m-%d %H:%M:%S %B %%"), "2024-02-29 12:34:56 February %");
    }

    #[test]
    fn tojson_is_python_json_dumps() {
        let t = ChatTemplate::new("{{ x | tojson }}|{{ x | tojson(indent=2) }}", None, None).unwrap();
        let extra = serde_json::json!({"x": {"a": [1, "é<&>'"], "b": {}}});
        let got = t.render_with(&[], false, extra.as_object().unwrap()).unwrap();
        assert_eq!(
            got,
            "{\"a\": [1, \"é<&>'\"], \"b\": {}}|{\n  \"a\": [\n    1,\n    \"é<&>'\"\n  ],\n  \"b\": {}\n}"
        );
    }

    #[test]
    fn template_errors_are_reported_not_panicked() {
        let err = ChatTemplate::new("{% if %}", None, None).unwrap_err().to_string();
        assert!(err.contains("chat template"), "{err}");
        let t = ChatTemplate::new("{{ raise_exception('roles must alternate') }}", None, None).unwrap();
        let err = t.render(&[], true).unwrap_err().to_string();
        assert!(err.contains("roles must alternate"), "{err}");
    }

    /// `make_chat_template_cases.py`: what transformers' `apply_chat_template` renders for
    /// templates in each family's style, several conversations each.
    #[test]
    fn templates_render_what_transformers_renders() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/chat_templates/cases.json");
        let cases: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let token = |k: &str| cases[k].as_str().map(str::to_string);
        let mut checked = 0;
        for case in cases["cases"].as_array().unwrap() {
            let name = case["template_name"].as_str().unwrap();
            let template =
                ChatTemplate::new(cases["templates"][name].as_str().unwrap(), token("bos_token"), token("eos_token"))
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
            let messages: Vec<ChatMessage> = case["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| ChatMessage::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
                .collect();
            let got = template.render_with(
                &messages,
                case["add_generation_prompt"] == true,
                case["extra"].as_object().unwrap(),
            );
            let what = format!("{name} / {} / {}", case["conversation"], case["extra"]);
            match case["expected"].as_str() {
                Some(want) => assert_eq!(got.unwrap_or_else(|e| panic!("{what}: {e}")), want, "{what}"),
                None => {
                    let err = got.expect_err(&what).to_string();
                    assert!(err.contains(case["error"].as_str().unwrap()), "{what}: {err}");
                }
            }
            checked += 1;
        }
        assert!(checked >= 20);
    }

    /// A model folder's `tokenizer_config.json` template (as an `AddedToken` BOS, as some write
    /// it) is what [`TextTokenizer::chat_prompt`](crate::TextTokenizer::chat_prompt) renders;
    /// without one the Mixtral-Instruct template is; a broken one is an error naming the line.
    #[test]
    fn a_model_folder_brings_its_template() {
        use crate::TextTokenizer;
        let dir = tempfile::tempdir().unwrap();
        let tokenizer = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/tokenizer/tokenizer.json");
        std::fs::copy(tokenizer, dir.path().join("tokenizer.json")).unwrap();
        let messages = [ChatMessage::new("system", "Be brief."), ChatMessage::new("user", "Hi")];
        let plain = TextTokenizer::from_model_dir(dir.path()).unwrap().unwrap();
        assert_eq!(plain.chat_prompt(&messages).unwrap(), "<s>[INST] Be brief.\n\nHi [/INST]");
        assert!(plain.chat_prompt(&[ChatMessage::new("assistant", "?")]).is_err());

        let config = serde_json::json!({
            "bos_token": {"content": "<s>", "lstrip": false},
            "chat_template": "{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}\
                {% if add_generation_prompt %}<|assistant|>{% endif %}",
        });
        std::fs::write(dir.path().join("tokenizer_config.json"), config.to_string()).unwrap();
        let templated = TextTokenizer::from_model_dir(dir.path()).unwrap().unwrap();
        assert_eq!(templated.chat_prompt(&messages).unwrap(), "<s><|system|>Be brief.\n<|user|>Hi\n<|assistant|>");

        std::fs::write(dir.path().join("chat_template.jinja"), "line one\n{% for %}").unwrap();
        let err = TextTokenizer::from_model_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("chat template") && err.contains("line 2"), "{err}");
    }
}
