//! Helpers for tests of either tier (feature `testkit`): the same fields spelled every way a
//! client may send them.

use std::collections::BTreeMap;

/// The boundary of [`spell`]'s multipart bodies; values containing it spell other bodies.
pub const BOUNDARY: &str = "testkit-7f3c9b";

/// `fields` as `(Content-Type, body)` in spelling `how % 4`: compact JSON, JSON with other
/// whitespace and member order, a form (members reversed), a multipart body.
pub fn spell(fields: &BTreeMap<String, String>, how: u8) -> (&'static str, Vec<u8>) {
    let json = |s: &String| serde_json::to_string(s).unwrap_or_default();
    match how % 4 {
        0 => (
            "application/json",
            serde_json::to_vec(fields).unwrap_or_default(),
        ),
        1 => {
            let members: Vec<String> = fields
                .iter()
                .rev()
                .map(|(k, v)| format!("\n  {} :\t{}", json(k), json(v)))
                .collect();
            (
                "application/json; charset=utf-8",
                format!(" {{{} }}\n", members.join(" ,")).into_bytes(),
            )
        }
        2 => {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.extend_pairs(fields.iter().rev());
            (
                "application/x-www-form-urlencoded",
                form.finish().into_bytes(),
            )
        }
        _ => {
            let mut body = String::new();
            for (k, v) in fields {
                body.push_str(&format!(
                    "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
                ));
            }
            body.push_str(&format!("--{BOUNDARY}--\r\n"));
            (
                "multipart/form-data; boundary=testkit-7f3c9b",
                body.into_bytes(),
            )
        }
    }
}
