//! Properties of the masking and redaction: any input is handled without a
//! panic, and planted numbers and secrets never survive.

use proptest::prelude::*;
use softphone::diagnostics::{PiiKind, mask_personal_data, redact_secrets, scrub};

proptest! {
    #[test]
    fn any_text_is_handled(text in any::<String>()) {
        let _ = scrub(&text);
        let _ = redact_secrets(&text);
        let masked = mask_personal_data(&text);
        // Masking again changes nothing.
        prop_assert_eq!(mask_personal_data(&masked), masked.clone());
        for kind in [PiiKind::Number, PiiKind::Uri, PiiKind::Name, PiiKind::NameAddr, PiiKind::Ip, PiiKind::Text] {
            let _ = kind.mask(&text);
        }
    }

    #[test]
    fn sip_like_text_is_handled(
        text in r#"[a-zA-Z0-9 :;@<>"\\=,.+()\[\]/\r\n-]{0,200}"#
    ) {
        let _ = scrub(&text);
        let masked = mask_personal_data(&text);
        prop_assert_eq!(mask_personal_data(&masked), masked.clone());
    }

    #[test]
    fn planted_numbers_users_and_secrets_never_survive(
        user in "[a-z]{3,8}\\.[a-z]{3,8}",
        number in "[1-9][0-9]{7,11}",
        password in "[A-Za-z0-9]{10,16}",
        nonce in "[0-9a-f]{16,32}",
        octet in 1u8..=254,
    ) {
        let message = format!(
            "INVITE sip:{number}@pbx.example.com SIP/2.0\r\n\
             From: \"{user}\" <sip:{user}@example.com>;tag=1\r\n\
             Contact: <sip:{user}:{password}@198.51.100.{octet}:5060>\r\n\
             Authorization: Digest username=\"{user}\", nonce=\"{nonce}\", response=\"{nonce}\"\r\n\
             X-Note: callback +49 {number}, password={password}\r\n"
        );
        let clean = mask_personal_data(&redact_secrets(&message)).into_owned();
        for planted in [&user, &number, &password, &nonce] {
            prop_assert!(!clean.contains(planted.as_str()), "{} in {}", planted, clean);
        }
        let address = format!("198.51.100.{octet}");
        prop_assert!(!clean.contains(&address), "{}", clean);
    }
}
