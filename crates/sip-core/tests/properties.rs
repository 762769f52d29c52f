//! Property tests: printing then parsing gives the same message, typed values
//! survive the round trip, no input makes the parser panic, and a stream cut
//! anywhere decodes to the same messages.
#![allow(clippy::unwrap_used, reason = "a property failure should fail loudly")]

use bytes::Bytes;
use proptest::prelude::*;
use sip_core::{Framing, Message, Method, ParseLimits, StreamDecoder, StreamItem};

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9.!%*_+`'~-]{0,15}"
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,10}[a-z0-9](\\.[a-z][a-z0-9]{0,8}){0,3}",
        (0u8..=255, 0u8..=255, 0u8..=255, 1u8..=254)
            .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
        any::<[u16; 8]>().prop_map(|s| format!("[{}]", std::net::Ipv6Addr::from(s))),
    ]
}

fn sip_uri() -> impl Strategy<Value = String> {
    (
        prop_oneof![Just("sip"), Just("sips")],
        proptest::option::of("[a-zA-Z0-9_.!~*'()&=+$,;?/-]{1,12}|[a-z]{1,4}%20[a-z]{1,4}"),
        host(),
        proptest::option::of(1u16..),
        proptest::collection::vec(
            (
                "[a-z][a-z0-9-]{0,6}",
                proptest::option::of("[a-z0-9.]{1,8}"),
            ),
            0..3,
        ),
    )
        .prop_map(|(scheme, user, host, port, params)| {
            let mut u = format!("{scheme}:");
            if let Some(user) = user {
                u.push_str(&user);
                u.push('@');
            }
            u.push_str(&host);
            if let Some(p) = port {
                u.push_str(&format!(":{p}"));
            }
            for (n, v) in params {
                u.push(';');
                u.push_str(&n);
                if let Some(v) = v {
                    u.push('=');
                    u.push_str(&v);
                }
            }
            u
        })
}

/// A display name: absent, tokens, or a quoted string with escapes and UTF-8.
fn display() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(prop_oneof![
        "[A-Za-z]{1,8}( [A-Za-z]{1,8}){0,2}",
        "[A-Za-z äöüéßñ\u{4e2d}\u{1f600},;<>@:]{0,12}"
            .prop_map(|s| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))),
        Just("\"a \\\"quoted\\\" \\\\ name\"".to_owned()),
    ])
}

#[derive(Debug, Clone)]
struct Generated {
    method: Method,
    uri: String,
    branch: String,
    from_display: Option<String>,
    from_uri: String,
    from_tag: String,
    to_uri: String,
    call_id: String,
    cseq: u32,
    max_forwards: u8,
    contact: Option<String>,
    extra: Vec<(String, String)>,
    body: Vec<u8>,
    compact: bool,
}

fn generated() -> impl Strategy<Value = Generated> {
    (
        (
            prop_oneof![
                Just(Method::Invite),
                Just(Method::Register),
                Just(Method::Options),
                Just(Method::Bye),
                Just(Method::Message),
                "[A-Z]{3,10}".prop_map(|m| Method::from_token(&m)),
            ],
            sip_uri(),
            "[A-Za-z0-9]{1,20}",
            display(),
            sip_uri(),
            token(),
            sip_uri(),
        ),
        (
            "[A-Za-z0-9.!%*_+`'~()<>:\\\\\"/\\[\\]?{}-]{1,24}(@[a-z0-9.]{1,12})?",
            0u32..(1 << 31),
            any::<u8>(),
            proptest::option::of(sip_uri()),
            proptest::collection::vec(("X-[A-Za-z0-9-]{1,12}", "[ -~äöü]{0,40}"), 0..4),
            proptest::collection::vec(any::<u8>(), 0..200),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (method, uri, branch, from_display, from_uri, from_tag, to_uri),
                (call_id, cseq, max_forwards, contact, extra, body, compact),
            )| Generated {
                method,
                uri,
                branch: format!("z9hG4bK{branch}"),
                from_display,
                from_uri,
                from_tag,
                to_uri,
                call_id,
                cseq,
                max_forwards,
                contact,
                extra,
                body,
                compact,
            },
        )
}

fn build(g: &Generated) -> Message {
    let name = |full: &'static str, short: &'static str| if g.compact { short } else { full };
    let from = match &g.from_display {
        Some(d) => format!("{d} <{}>;tag={}", g.from_uri, g.from_tag),
        None => format!("<{}>;tag={}", g.from_uri, g.from_tag),
    };
    let mut b = Message::request(g.method.clone(), &g.uri)
        .header(
            name("Via", "v"),
            &format!("SIP/2.0/UDP 192.0.2.1:5060;branch={};rport", g.branch),
        )
        .unwrap()
        .header(name("From", "f"), &from)
        .unwrap()
        .header(name("To", "t"), &format!("<{}>", g.to_uri))
        .unwrap()
        .header(name("Call-ID", "i"), &g.call_id)
        .unwrap()
        .header("CSeq", &format!("{} {}", g.cseq, g.method))
        .unwrap()
        .header("Max-Forwards", &g.max_forwards.to_string())
        .unwrap();
    if let Some(c) = &g.contact {
        b = b
            .header(name("Contact", "m"), &format!("<{c}>;expires=60"))
            .unwrap();
    }
    for (n, v) in &g.extra {
        b = b.header(n, v).unwrap();
    }
    b.body(g.body.clone()).build().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parse_of_print_is_identity(g in generated()) {
        let built = build(&g);
        let printed = built.to_bytes();
        let parsed = Message::parse(printed.clone()).unwrap();
        prop_assert_eq!(&parsed, &built);
        prop_assert_eq!(parsed.to_bytes(), printed);
        parsed.validate().unwrap();
        // And the canonical form of a modified copy parses to the same thing.
        let mut modified = parsed.clone();
        modified.push_header("X-Added", "1").unwrap();
        let reparsed = Message::parse(modified.to_bytes()).unwrap();
        prop_assert_eq!(&reparsed, &modified);

        // Typed values come back as generated.
        prop_assert_eq!(parsed.method(), Some(&g.method));
        prop_assert_eq!(parsed.via().unwrap().branch(), Some(g.branch.as_str()));
        let from = parsed.from().unwrap();
        prop_assert_eq!(from.tag(), Some(g.from_tag.as_str()));
        prop_assert_eq!(from.uri.to_string().to_lowercase(), g.from_uri.to_lowercase());
        if let Some(d) = &g.from_display {
            let shown = from.display_name().unwrap();
            let expected = if d.starts_with('"') {
                d[1..d.len() - 1].replace("\\\\", "\u{0}").replace('\\', "").replace('\u{0}', "\\")
            } else {
                d.clone()
            };
            prop_assert_eq!(shown.as_ref(), expected.as_str());
        }
        prop_assert_eq!(parsed.call_id().unwrap(), g.call_id.as_str());
        prop_assert_eq!(parsed.cseq().unwrap().seq, g.cseq);
        prop_assert_eq!(parsed.max_forwards().unwrap(), Some(g.max_forwards));
        prop_assert_eq!(parsed.body(), &g.body[..]);
        prop_assert_eq!(parsed.content_length(), Some(g.body.len() as u32));
        if let Some(c) = &g.contact {
            let contact = parsed.contact().unwrap().unwrap();
            let addr = contact.address().unwrap();
            prop_assert_eq!(addr.uri.to_string().to_lowercase(), c.to_lowercase());
            prop_assert_eq!(addr.expires(), Some(60));
        }
        for (n, v) in &g.extra {
            prop_assert!(parsed.header_values(n).any(|x| x == v.trim()));
        }
    }

    #[test]
    fn no_input_makes_the_parser_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(m) = Message::parse(data) {
            let _ = m.validate();
            let _ = (m.via(), m.from(), m.to(), m.call_id(), m.cseq(), m.contact());
            let _ = m.vias().count() + m.contacts().count() + m.routes().count();
            let _ = m.canonical();
        }
    }

    #[test]
    fn damaged_messages_never_panic(g in generated(), at in any::<prop::sample::Index>(), junk in proptest::collection::vec(any::<u8>(), 1..8), cut in any::<bool>()) {
        let mut bytes = build(&g).to_bytes().to_vec();
        let i = at.index(bytes.len());
        if cut {
            bytes.truncate(i);
        } else {
            bytes.splice(i..i, junk);
        }
        if let Ok(m) = Message::parse(bytes) {
            let _ = m.validate();
            let _ = (m.via(), m.from(), m.to(), m.call_id(), m.cseq(), m.contact(), m.request_uri());
            let again = Message::parse(m.canonical());
            prop_assert!(again.is_ok(), "canonical form of an accepted message must parse");
        }
    }

    #[test]
    fn a_stream_cut_anywhere_decodes_the_same(gs in proptest::collection::vec(generated(), 1..4), cuts in proptest::collection::vec(1usize..300, 1..20)) {
        let messages: Vec<Message> = gs.iter().map(build).collect();
        let mut stream = Vec::new();
        for m in &messages {
            stream.extend_from_slice(b"\r\n\r\n");
            stream.extend_from_slice(&m.to_bytes());
        }
        let mut d = StreamDecoder::new(ParseLimits::default());
        let mut got = Vec::new();
        let mut rest = &stream[..];
        let mut cut = cuts.iter().cycle();
        while !rest.is_empty() {
            let n = (*cut.next().unwrap()).min(rest.len());
            d.push(&rest[..n]);
            rest = &rest[n..];
            while let Some(item) = d.next_item() {
                if let StreamItem::Message(m) = item.unwrap() {
                    got.push(m);
                }
            }
        }
        prop_assert_eq!(got.len(), messages.len());
        for (a, b) in got.iter().zip(&messages) {
            prop_assert_eq!(a, b);
        }
        prop_assert_eq!(d.buffered(), 0);
    }
}

#[test]
fn stream_framing_requires_content_length() {
    let m = Bytes::from_static(
        b"OPTIONS sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nFrom: <sip:b@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n\r\n",
    );
    assert!(Message::parse_with(m.clone(), &ParseLimits::default(), Framing::Stream).is_err());
    assert!(Message::parse_with(m, &ParseLimits::default(), Framing::Datagram).is_ok());
}
