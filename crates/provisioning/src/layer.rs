//! Combining a document with the documents it includes.
//!
//! A document and its includes are layers applied in order: the first
//! include, the next, ..., then the document itself. Each layer replaces
//! what it defines: an account or a contact source by id (in place, or
//! appended when new), and the `<tls>`, `<media>`, `<relay>`, `<push>`,
//! `<privacy>` and `<provisioning>` sections whole, when the layer's document
//! has the element. A section a document leaves out is inherited, not reset
//! to defaults. Locks travel with what they lock: a replaced section takes
//! the replacing layer's locks. Unknown root elements are collected from
//! every layer, unknown attributes of the same name are overridden.

use std::collections::BTreeSet;

use config_export::{Config, ContactSource, Extra};
use quick_xml::events::Event;

const ROOT: &str = "softphone-config";

/// A parsed document and the top-level sections its text contains.
#[derive(Debug, Clone)]
pub(crate) struct Layer {
    pub(crate) config: Config,
    pub(crate) sections: BTreeSet<String>,
}

impl Layer {
    /// `config` parsed from `text`.
    pub(crate) fn new(config: Config, text: &str) -> Self {
        Self {
            config,
            sections: top_level_elements(text),
        }
    }
}

/// The layers combined so far.
#[derive(Debug, Clone, Default)]
pub(crate) struct Combined {
    pub(crate) config: Config,
    sections: BTreeSet<String>,
}

impl Combined {
    /// The combination as one layer, to lay over another document's.
    pub(crate) fn into_layer(self) -> Layer {
        Layer {
            config: self.config,
            sections: self.sections,
        }
    }

    /// Lays `top` over what was combined so far.
    pub(crate) fn apply(&mut self, top: Layer) {
        let Layer {
            config: top,
            sections,
        } = top;
        let base = &mut self.config;
        let mut replaced: Vec<String> = Vec::new();

        for account in top.accounts {
            replaced.push(Config::account_path(&account.id));
            match base.accounts.iter_mut().find(|a| a.id == account.id) {
                Some(slot) => *slot = account,
                None => base.accounts.push(account),
            }
        }
        for source in top.contacts.sources {
            replaced.push(source_path(&source));
            match base
                .contacts
                .sources
                .iter_mut()
                .find(|s| s.id() == source.id())
            {
                Some(slot) => {
                    replaced.push(source_path(slot));
                    *slot = source;
                }
                None => base.contacts.sources.push(source),
            }
        }
        if sections.contains("contacts") {
            merge_extra(&mut base.contacts.extra, top.contacts.extra);
        }
        if sections.contains("tls") {
            base.tls = top.tls;
            replaced.push(format!("{ROOT}/tls"));
        }
        if sections.contains("media") {
            base.media = top.media;
            replaced.push(format!("{ROOT}/media"));
        }
        if sections.contains("relay") {
            base.relay = top.relay;
            replaced.push(format!("{ROOT}/relay"));
        }
        if sections.contains("privacy") {
            base.privacy = top.privacy;
            replaced.push(format!("{ROOT}/privacy"));
        }
        if let Some(push) = top.push {
            base.push = Some(push);
            replaced.push(format!("{ROOT}/push"));
        }
        if let Some(provisioning) = top.provisioning {
            base.provisioning = Some(provisioning);
            replaced.push(format!("{ROOT}/provisioning"));
        }
        merge_extra(&mut base.extra, top.extra);
        base.extra
            .value_attributes
            .retain(|segment, _| !segment.starts_with("include["));

        base.locked.retain(|lock| {
            !replaced.iter().any(|p| {
                lock == p
                    || lock
                        .strip_prefix(p.as_str())
                        .is_some_and(|r| r.starts_with('/'))
            })
        });
        base.locked.extend(
            top.locked
                .into_iter()
                .filter(|l| !l.starts_with(&format!("{ROOT}/include["))),
        );
        base.includes.clear();
        self.sections.extend(sections);
    }
}

fn source_path(source: &ContactSource) -> String {
    let kind = match source {
        ContactSource::Ldap(_) => "ldap",
        ContactSource::Google(_) => "google",
        ContactSource::Exchange(_) => "exchange",
    };
    format!("{ROOT}/contacts/{kind}[{}]", source.id())
}

fn merge_extra(base: &mut Extra, top: Extra) {
    for (name, value) in top.attributes {
        match base.attributes.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => base.attributes.push((name, value)),
        }
    }
    // An element the layers below have already is not repeated; one a
    // document repeats itself is its own business and stays. A set, as a
    // document may hold hundreds of thousands.
    let below: std::collections::HashSet<String> = base.elements.iter().cloned().collect();
    base.elements
        .extend(top.elements.into_iter().filter(|e| !below.contains(e)));
    base.value_attributes.extend(top.value_attributes);
}

/// Names of the root element's children in `text` (which has already been
/// read successfully by `Config::from_xml`).
fn top_level_elements(text: &str) -> BTreeSet<String> {
    let mut reader = quick_xml::Reader::from_str(text);
    let mut depth = 0usize;
    let mut names = BTreeSet::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(tag)) => {
                if depth == 1 {
                    names.insert(tag.name().as_ref().to_owned());
                }
                depth += 1;
            }
            Ok(Event::Empty(tag)) => {
                if depth == 1 {
                    names.insert(tag.name().as_ref().to_owned());
                }
            }
            Ok(Event::End(_)) => depth = depth.saturating_sub(1),
            Ok(Event::Eof) | Err(_) => break,
            Ok(_) => {}
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(text: &str) -> Layer {
        Layer::new(Config::from_xml(text).unwrap(), text)
    }

    const COMMON: &str = r#"<softphone-config version="1">
  <account id="shared"><user>reception</user><registrar>sip:pbx.example.com</registrar></account>
  <tls><ca-file>/etc/company-ca.pem</ca-file></tls>
  <media locked="true"><codec>PCMA</codec><srtp>mandatory</srtp></media>
  <privacy><crash-reports>true</crash-reports></privacy>
  <contacts><ldap id="dir"><url>ldaps://ldap.example.com</url><base>dc=example</base></ldap></contacts>
  <x-branding>common</x-branding>
</softphone-config>"#;

    const USER: &str = r#"<softphone-config version="1">
  <include>common.xml</include>
  <account id="alice"><user>2001</user><registrar locked="true">sip:pbx.example.com</registrar></account>
  <privacy><crash-reports>false</crash-reports></privacy>
  <x-branding>user</x-branding>
</softphone-config>"#;

    #[test]
    fn the_including_document_wins_and_absent_sections_are_inherited() {
        let mut combined = Combined::default();
        combined.apply(layer(COMMON));
        combined.apply(layer(USER));
        let config = combined.config;
        let ids: Vec<_> = config.accounts.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["shared", "alice"]);
        assert_eq!(config.media.codecs, ["PCMA"]);
        assert_eq!(config.tls.trust.len(), 1);
        assert!(!config.privacy.crash_reports);
        assert_eq!(config.contacts.sources.len(), 1);
        assert!(config.includes.is_empty());
        assert!(config.is_locked("softphone-config/media/srtp"));
        assert!(config.is_locked("softphone-config/account[alice]/registrar"));
        assert_eq!(
            config.extra.elements,
            [
                "<x-branding>common</x-branding>",
                "<x-branding>user</x-branding>"
            ]
        );
        config.validate().unwrap();
    }

    #[test]
    fn a_document_that_repeats_an_unknown_element_keeps_both() {
        let doc = r#"<softphone-config version="1">
  <x-line-key type="blf"/><x-line-key type="blf"/><x-branding>common</x-branding>
</softphone-config>"#;
        let mut combined = Combined::default();
        combined.apply(layer(doc));
        // As Config::from_xml reads it.
        let direct = Config::from_xml(doc).unwrap();
        assert_eq!(combined.config.extra.elements, direct.extra.elements);
        assert_eq!(combined.config.extra.elements.len(), 3);
        // A layer above that has one of them already does not add it again.
        combined.apply(layer(
            r#"<softphone-config version="1"><x-branding>common</x-branding></softphone-config>"#,
        ));
        assert_eq!(combined.config.extra.elements.len(), 3);
    }

    #[test]
    fn a_replaced_section_takes_the_new_layers_locks() {
        let mut combined = Combined::default();
        combined.apply(layer(COMMON));
        combined.apply(layer(
            r#"<softphone-config version="1"><media><codec>opus</codec></media></softphone-config>"#,
        ));
        assert_eq!(combined.config.media.codecs, ["opus"]);
        assert!(!combined.config.is_locked("softphone-config/media"));
        combined.config.validate().unwrap();
    }

    #[test]
    fn top_level_elements_are_found_empty_or_not() {
        let names = top_level_elements(
            r#"<softphone-config version="1"><media/><privacy><x><media/></x></privacy></softphone-config>"#,
        );
        assert_eq!(names.into_iter().collect::<Vec<_>>(), ["media", "privacy"]);
    }
}
