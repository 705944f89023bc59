//! Incoming gateway webhooks (SERVICES.md, ledger 8): HMAC-SHA256 over `timestamp.body`,
//! ±300 s tolerance, several signatures during key rotation.

use services::gateway::{WebhookError, sign_webhook, verify_webhook};

const NOW: i64 = 1_800_000_000;

#[test]
fn accepts_a_good_signature_and_rejects_tampering() {
    let body = br#"{"id":"evt_1","type":"charge.succeeded"}"#;
    let sig = sign_webhook(b"s3cret", NOW, body);
    let header = format!("t={NOW},v1={sig}");
    assert_eq!(verify_webhook(&[b"s3cret"], &header, body, NOW), Ok(()));
    assert_eq!(verify_webhook(&[b"s3cret"], &header, body, NOW + 299), Ok(()));
    assert_eq!(
        verify_webhook(&[b"other"], &header, body, NOW),
        Err(WebhookError::BadSignature)
    );
    assert_eq!(
        verify_webhook(
            &[b"s3cret"],
            &header,
            br#"{"id":"evt_1","type":"charge.refunded"}"#,
            NOW
        ),
        Err(WebhookError::BadSignature)
    );
    // The timestamp is signed: moving it breaks the signature.
    let moved = format!("t={},v1={sig}", NOW + 1);
    assert_eq!(
        verify_webhook(&[b"s3cret"], &moved, body, NOW),
        Err(WebhookError::BadSignature)
    );
}

#[test]
fn rejects_stale_and_future_timestamps() {
    let body = b"{}";
    for t in [NOW - 301, NOW + 301] {
        let header = format!("t={t},v1={}", sign_webhook(b"k", t, body));
        assert_eq!(verify_webhook(&[b"k"], &header, body, NOW), Err(WebhookError::Stale));
    }
}

#[test]
fn key_rotation_accepts_either_secret_and_either_signature() {
    let body = b"payload";
    let old = sign_webhook(b"old", NOW, body);
    let new = sign_webhook(b"new", NOW, body);
    let header = format!("t={NOW},v1={old},v1={new}");
    assert_eq!(verify_webhook(&[b"new"], &header, body, NOW), Ok(()));
    assert_eq!(verify_webhook(&[b"old"], &header, body, NOW), Ok(()));
    assert_eq!(
        verify_webhook(&[b"x", b"new"], &format!("t={NOW},v1={new}"), body, NOW),
        Ok(())
    );
}

#[test]
fn malformed_headers_are_refused() {
    for h in [
        "",
        "t=abc,v1=00",
        "v1=00",
        "t=1800000000",
        "t=1800000000,v1=zz",
        "garbage",
    ] {
        assert_eq!(
            verify_webhook(&[b"k"], h, b"", NOW),
            Err(WebhookError::Malformed),
            "{h:?}"
        );
    }
}
