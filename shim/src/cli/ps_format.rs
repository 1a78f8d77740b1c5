//! `ps --format`: one line per task, from a Go-template-like string
//! (`{{.ID}} {{.Status}}`, as podman and docker take) or a comma-separated
//! field list (`id,status,pid`, printed tab-separated). No header line, so the
//! output feeds scripts; a broken task prints `broken` as its status and
//! empty fields.

use nomad_shim::state::{TaskId, TaskState};
use nomad_shim::{Error, Executor, Status};

/// The fields `--format` knows, as written in a template.
pub const FIELDS: [&str; 9] = [
    "ID",
    "Status",
    "PID",
    "ExitCode",
    "Created",
    "Started",
    "Finished",
    "Command",
    "Supervisor",
];

/// One piece of a parsed format.
#[derive(Debug, PartialEq)]
enum Piece {
    Text(String),
    Field(&'static str),
}

/// Parses `format`: a template if it contains `{{`, else a field list.
/// The error names `--format` and the piece it could not read.
fn parse(format: &str) -> Result<Vec<Piece>, String> {
    let field = |name: &str| -> Result<&'static str, String> {
        FIELDS
            .iter()
            .find(|f| f.eq_ignore_ascii_case(name))
            .copied()
            .ok_or_else(|| {
                format!(
                    "--format: unknown field {name:?}; the fields are {}",
                    FIELDS.join(", ")
                )
            })
    };
    let mut pieces = Vec::new();
    if !format.contains("{{") {
        for (i, name) in format.split(',').enumerate() {
            if i > 0 {
                pieces.push(Piece::Text("\t".into()));
            }
            pieces.push(Piece::Field(field(name.trim())?));
        }
        return Ok(pieces);
    }
    let mut rest = format;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            pieces.push(Piece::Text(unescape(&rest[..start])));
        }
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("--format: {{{{ without }}}} in {format:?}"))?;
        let inner = after[..end].trim();
        let name = inner.strip_prefix('.').ok_or_else(|| {
            format!("--format: {{{{{inner}}}}} is not a field like {{{{.ID}}}} in {format:?}")
        })?;
        pieces.push(Piece::Field(field(name)?));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(unescape(rest)));
    }
    Ok(pieces)
}

/// `\t` and `\n` as a shell would not give them.
fn unescape(s: &str) -> String {
    s.replace("\\t", "\t").replace("\\n", "\n")
}

/// The value of one field of one task.
fn value(
    executor: &Executor,
    id: &TaskId,
    state: &Result<TaskState, Error>,
    field: &str,
) -> String {
    let Ok(s) = state else {
        return match field {
            "ID" => id.to_string(),
            "Status" => "broken".into(),
            _ => String::new(),
        };
    };
    let or_empty = |v: Option<String>| v.unwrap_or_default();
    match field {
        "ID" => s.id.to_string(),
        "Status" => s.status.to_string(),
        "PID" => or_empty(
            s.task
                .filter(|_| s.status == Status::Running)
                .map(|t| t.pid.to_string()),
        ),
        "ExitCode" => or_empty(
            s.exit
                .as_ref()
                .and_then(|e| e.shell_code())
                .map(|c| c.to_string()),
        ),
        "Created" => s.created_at.to_string(),
        "Started" => or_empty(s.started_at.as_ref().map(|t| t.to_string())),
        "Finished" => or_empty(s.finished_at.as_ref().map(|t| t.to_string())),
        "Command" => super::query::command_of(executor, id.as_str()),
        "Supervisor" => or_empty(s.supervisor.map(|p| p.pid.to_string())),
        _ => String::new(),
    }
}

/// Prints `list` in `format`; a bad format is a usage error (exit 125).
pub fn print(
    executor: &Executor,
    list: &[(TaskId, Result<TaskState, Error>)],
    format: &str,
) -> Result<i32, Error> {
    let pieces = match parse(format) {
        Ok(p) => p,
        Err(msg) => {
            eprintln!("nomad-shim: {msg}");
            return Ok(super::EXIT_ERROR);
        }
    };
    for (id, state) in list {
        let line: String = pieces
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.clone(),
                Piece::Field(f) => value(executor, id, state, f),
            })
            .collect();
        println!("{line}");
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_and_lists() {
        assert_eq!(
            parse("{{.ID}} {{ .status }}").unwrap(),
            vec![
                Piece::Field("ID"),
                Piece::Text(" ".into()),
                Piece::Field("Status")
            ]
        );
        assert_eq!(
            parse("id,pid").unwrap(),
            vec![
                Piece::Field("ID"),
                Piece::Text("\t".into()),
                Piece::Field("PID")
            ]
        );
        assert!(parse("{{.Nope}}").unwrap_err().contains("--format"));
        assert!(parse("{{.ID").unwrap_err().contains("without"));
        assert!(parse("{{ID}}").unwrap_err().contains("not a field"));
        assert!(parse("id,,pid").is_err());
    }
}
