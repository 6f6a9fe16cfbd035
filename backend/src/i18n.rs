//! The languages problem details are written in, and how a request picks one.

/// A language the service answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// English, the default.
    En,
    /// Spanish.
    Es,
    /// French.
    Fr,
}

impl Lang {
    /// The tag sent in `Content-Language`.
    pub fn tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Es => "es",
            Lang::Fr => "fr",
        }
    }

    /// The best language for an `Accept-Language` header (RFC 9110 §12.5.4): the supported
    /// language with the highest weight, ties going to the one listed first; English when
    /// the header is absent or names none of ours.
    pub fn negotiate(accept_language: Option<&str>) -> Lang {
        let Some(header) = accept_language else {
            return Lang::En;
        };
        let mut best: Option<(u16, Lang)> = None;
        for range in header.split(',') {
            let mut parts = range.split(';');
            let tag = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let weight = parts
                .find_map(|p| p.trim().strip_prefix("q=").map(parse_weight))
                .unwrap_or(Some(1000));
            let Some(weight) = weight else { continue };
            let primary = tag.split('-').next().unwrap_or("");
            let lang = match primary {
                "en" | "*" => Lang::En,
                "es" => Lang::Es,
                "fr" => Lang::Fr,
                _ => continue,
            };
            if weight > 0 && best.is_none_or(|(w, _)| weight > w) {
                best = Some((weight, lang));
            }
        }
        best.map_or(Lang::En, |(_, lang)| lang)
    }
}

/// A q-value in thousandths (`q=0.5` → 500), `None` when malformed.
fn parse_weight(q: &str) -> Option<u16> {
    let q = q.trim();
    let (int, frac) = q.split_once('.').unwrap_or((q, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_value: u16 = format!("{frac:0<3}").parse().ok()?;
    match int {
        "0" => Some(frac_value),
        "1" if frac_value == 0 => Some(1000),
        _ => None,
    }
}

/// A text in the three languages.
#[derive(Debug, Clone, Copy)]
pub struct Text {
    /// English.
    pub en: &'static str,
    /// Spanish.
    pub es: &'static str,
    /// French.
    pub fr: &'static str,
}

impl Text {
    /// The text in `lang`, with each `{}` replaced by the next of `args`.
    pub fn render(&self, lang: Lang, args: &[&str]) -> String {
        let template = match lang {
            Lang::En => self.en,
            Lang::Es => self.es,
            Lang::Fr => self.fr,
        };
        let mut out = String::with_capacity(template.len());
        let mut args = args.iter();
        let mut rest = template;
        while let Some(i) = rest.find("{}") {
            out.push_str(&rest[..i]);
            out.push_str(args.next().copied().unwrap_or(""));
            rest = &rest[i + 2..];
        }
        out.push_str(rest);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_weights_and_defaults_to_english() {
        let cases = [
            (None, Lang::En),
            (Some(""), Lang::En),
            (Some("es"), Lang::Es),
            (Some("fr-CA,fr;q=0.9,en;q=0.8"), Lang::Fr),
            (Some("de-DE,es;q=0.5,en;q=0.4"), Lang::Es),
            (Some("de, en;q=0.1, fr;q=0.2"), Lang::Fr),
            (Some("fr;q=0, es;q=0.3"), Lang::Es),
            (Some("fr;q=2"), Lang::En),
            (Some("ES-mx"), Lang::Es),
            (Some("de"), Lang::En),
        ];
        for (header, want) in cases {
            assert_eq!(Lang::negotiate(header), want, "{header:?}");
        }
    }

    #[test]
    fn render_fills_placeholders_in_order() {
        let t = Text {
            en: "{} of {}",
            es: "{} de {}",
            fr: "{} sur {}",
        };
        assert_eq!(t.render(Lang::Es, &["1", "2"]), "1 de 2");
        assert_eq!(t.render(Lang::En, &["1"]), "1 of ");
    }
}
