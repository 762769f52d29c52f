//! Property: import(export(config)) == config, plaintext and encrypted.

use config_export::{
    Account, Config, ContactSource, DtmfMode, Export, Extra, Import, LdapSource, OAuthSource,
    Provisioning, Push, Secret, SrtpPolicy, Transport, TrustAnchor, Turn,
};
use proptest::prelude::*;
use proptest::sample::select;

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 .:;@<>&\"'=_é-]{0,12}"
}

fn required() -> impl Strategy<Value = String> {
    "[a-z0-9][a-zA-Z0-9 .<>&\"'é-]{0,10}"
}

fn secret() -> impl Strategy<Value = Secret> {
    "[a-zA-Z0-9 \t\n\r<>&\"'%*é]{0,16}".prop_map(Secret::new)
}

fn uri() -> impl Strategy<Value = String> {
    (select(vec!["sip:", "sips:"]), "[a-z0-9.@:;=<>&-]{1,16}").prop_map(|(s, r)| format!("{s}{r}"))
}

fn extra(known_attribute: &'static str) -> impl Strategy<Value = Extra> {
    (
        prop::collection::vec(("x-[a-z]{1,4}", text()), 0..2),
        prop::collection::vec(("x-[a-z]{1,4}", text(), "[a-z]{1,4}"), 0..2),
    )
        .prop_map(move |(attributes, elements)| {
            let mut extra = Extra::default();
            for (name, value) in attributes {
                if name != known_attribute && !extra.attributes.iter().any(|(n, _)| *n == name) {
                    extra.attributes.push((name, value));
                }
            }
            for (name, value, child) in elements {
                let escaped = value
                    .replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;");
                let fragment = if escaped.is_empty() {
                    format!("<{name}><{child}/></{name}>")
                } else {
                    format!("<{name} a=\"1\">{escaped}</{name}>")
                };
                extra.elements.push(fragment);
            }
            extra
        })
}

prop_compose! {
    fn account()(
        id in "[a-z0-9_.-]{1,8}",
        user in required(),
        auth_user in prop::option::of(text()),
        password in prop::option::of(secret()),
        display_name in prop::option::of(text()),
        registrar in uri(),
        outbound_proxies in prop::collection::vec(uri(), 0..3),
        transport in select(Transport::ALL.to_vec()),
        expiry in 1u32..=86_400,
        extra in extra("id"),
        hint in prop::option::of(text()),
    ) -> Account {
        let mut account = Account::new(id, user, registrar);
        account.auth_user = auth_user;
        account.password = password;
        account.display_name = display_name;
        account.outbound_proxies = outbound_proxies;
        account.transport = transport;
        account.expiry = expiry;
        account.extra = extra;
        if let Some(hint) = hint {
            account.extra.value_attributes.insert("registrar".to_owned(), vec![("x-hint".to_owned(), hint)]);
        }
        account
    }
}

fn contact_source() -> impl Strategy<Value = ContactSource> {
    let ldap = (
        "[a-z]{1,6}",
        (select(vec!["ldap://", "ldaps://"]), "[a-z.]{1,10}"),
        required(),
        prop::option::of(text()),
        prop::option::of(secret()),
        prop::option::of(text()),
        extra("id"),
    )
        .prop_map(
            |(id, (scheme, host), base, bind_dn, bind_password, filter, extra)| {
                ContactSource::Ldap(LdapSource {
                    id,
                    url: format!("{scheme}{host}"),
                    base,
                    bind_dn,
                    bind_password,
                    filter,
                    extra,
                })
            },
        );
    let oauth = (
        "[a-z]{1,6}",
        required(),
        prop::option::of(secret()),
        extra("id"),
        any::<bool>(),
    )
        .prop_map(|(id, client_id, refresh_token, extra, google)| {
            let source = OAuthSource {
                id,
                client_id,
                refresh_token,
                extra,
            };
            if google {
                ContactSource::Google(source)
            } else {
                ContactSource::Exchange(source)
            }
        });
    prop_oneof![ldap, oauth]
}

prop_compose! {
    fn config()(
        accounts in prop::collection::vec(account(), 0..3),
        trust in prop::collection::vec(prop_oneof![
            required().prop_map(TrustAnchor::File),
            text().prop_map(|t| TrustAnchor::Pem(format!("-----BEGIN CERTIFICATE-----\n{t}\n-----END CERTIFICATE-----"))),
        ], 0..3),
        codecs in prop::collection::btree_set("[a-z0-9]{1,6}", 1..4),
        srtp in select(SrtpPolicy::ALL.to_vec()),
        dtmf in select(DtmfMode::ALL.to_vec()),
        (jitter_min_ms, jitter_max_ms) in (0u32..=2000).prop_flat_map(|max| (0..=max, Just(max))),
        media_extra in extra(""),
        sources in prop::collection::vec(contact_source(), 0..3),
        proxies in prop::collection::vec(uri(), 0..3),
        turn in prop::option::of((("turns?:[a-z.:0-9]{1,10}"), prop::option::of(text()), prop::option::of(secret()), extra(""))),
        push in prop::option::of((required(), "[a-f0-9]{1,16}", prop::option::of(text()), extra(""))),
        privacy in (any::<bool>(), any::<bool>(), 0u32..=36_500, 0u32..=36_500, extra("")),
        root_extra in extra("version"),
        includes in prop::collection::vec("https://[a-z.]{1,8}/[a-z{}_]{1,8}[.]xml", 0..3),
        provisioning in prop::option::of((prop::option::of(60u32..=2_592_000), extra(""))),
        lock_flags in prop::collection::vec(any::<bool>(), 4),
    ) -> Config {
        let mut config = Config::default();
        let mut ids = std::collections::HashSet::new();
        config.accounts = accounts.into_iter().filter(|a| ids.insert(a.id.clone())).collect();
        config.tls.trust = trust;
        config.media.codecs = codecs.into_iter().collect();
        config.media.srtp = srtp;
        config.media.dtmf = dtmf;
        config.media.jitter_min_ms = jitter_min_ms;
        config.media.jitter_max_ms = jitter_max_ms;
        config.media.extra = media_extra;
        let mut ids = std::collections::HashSet::new();
        config.contacts.sources = sources.into_iter().filter(|s| ids.insert(s.id().to_owned())).collect();
        config.relay.proxies = proxies;
        config.relay.turn = turn.map(|(server, user, password, extra)| Turn { server, user, password, extra });
        config.push = push.map(|(provider, prid, param, extra)| Push { provider, prid: Secret::new(prid), param, extra });
        let (crash_reports, log_personal_data, history, logs, privacy_extra) = privacy;
        config.privacy.crash_reports = crash_reports;
        config.privacy.log_personal_data = log_personal_data;
        config.privacy.history_retention_days = history;
        config.privacy.log_retention_days = logs;
        config.privacy.extra = privacy_extra;
        config.extra = root_extra;
        config.includes = includes;
        config.provisioning = provisioning.map(|(check_interval, extra)| Provisioning { check_interval, extra });
        let mut candidates = vec![
            "softphone-config".to_owned(),
            "softphone-config/media/srtp".to_owned(),
            "softphone-config/privacy".to_owned(),
        ];
        if let Some(account) = config.accounts.first() {
            candidates.push(format!("{}/registrar", Config::account_path(&account.id)));
        }
        for (path, lock) in candidates.into_iter().zip(lock_flags) {
            if lock {
                config.locked.insert(path);
            }
        }
        config
    }
}

proptest! {
    #[test]
    fn plaintext_export_round_trips(config in config()) {
        config.validate().unwrap();
        let export = Export::new(&config).plaintext().unwrap();
        let back = Import::new().import(export.document.as_bytes()).unwrap();
        prop_assert_eq!(back, config);
    }
}

proptest! {
    // scrypt is slow by design; a handful of cases at a low work factor.
    #![proptest_config(ProptestConfig::with_cases(6))]
    #[test]
    fn encrypted_export_round_trips(config in config(), passphrase in "[ -~]{1,20}") {
        let passphrase = Secret::new(passphrase);
        let file = Export::new(&config).with_work_factor(4).encrypt(&passphrase).unwrap();
        let back = Import::new().with_passphrase(&passphrase).import(file.as_bytes()).unwrap();
        prop_assert_eq!(back, config);
    }
}
