use std::time::Duration;

use testkit::{PeerError, Scenario, ShippedScenario, Sipp, SippTransport};

#[test]
fn builtin_uac_completes_one_call_against_builtin_uas() {
    let uas = Sipp::new(Scenario::uas())
        .with_timeout(Duration::from_secs(30))
        .spawn()
        .unwrap();
    let uas_pid = uas.pid().expect("uas pid");
    assert!(testkit::cpu_seconds(uas_pid).is_ok());
    let uac = Sipp::new(Scenario::uac())
        .with_remote(uas.addr())
        .with_calls(1)
        .with_rate(1.0)
        .with_timeout(Duration::from_secs(30))
        .run()
        .unwrap();
    let uas = uas.wait().unwrap();
    assert!(uac.is_success(), "{}", uac.report());
    assert!(uas.is_success(), "{}", uas.report());
    assert_eq!(uac.stats.successful_calls, 1, "{}", uac.report());
    assert_eq!(uac.stats.failed_calls, 0);
    assert!(
        uac.stats.columns.contains_key("SuccessfulCall(C)"),
        "statistics come from the -trace_stat CSV"
    );
    assert_eq!(uas.stats.successful_calls, 1, "{}", uas.report());
    assert!(
        uac.cpu_seconds.is_some(),
        "sipp's CPU time is known after it exits"
    );
    assert_eq!(uas.pid, Some(uas_pid));
}

/// The built-in UAS ends with a 4 s timewait, during which a TCP peer that
/// closes its connection fails the call; the shipped scenarios have none.
#[test]
fn shipped_invite_scenarios_complete_two_calls_over_tcp() {
    let callee = Sipp::new(Scenario::Shipped(ShippedScenario::UasInviteAnswer))
        .with_transport(SippTransport::TcpMono)
        .with_calls(2)
        .spawn()
        .unwrap();
    let caller = Sipp::new(Scenario::Shipped(ShippedScenario::UacInvite))
        .with_transport(SippTransport::TcpMono)
        .with_remote(callee.addr())
        .with_service("bob")
        .with_key("caller", "alice")
        .with_calls(2)
        .with_rate(10.0)
        .with_rate_period(Duration::from_secs(1))
        .with_call_duration(Duration::from_millis(200))
        .run()
        .unwrap();
    let callee = callee.wait().unwrap();
    assert!(caller.is_success(), "{}", caller.report());
    assert_eq!(caller.stats.successful_calls, 2, "{}", caller.report());
    assert!(callee.is_success(), "{}", callee.report());
    assert_eq!(callee.stats.successful_calls, 2, "{}", callee.report());
}

#[test]
fn shipped_registrar_scenario_accepts_the_right_password_only() {
    for (password, expect_success) in [("secret", true), ("wrong", false)] {
        let registrar = Sipp::new(Scenario::Shipped(ShippedScenario::UasRegisterAuth))
            .with_key("user", "alice")
            .with_key("pass", "secret")
            .with_key("realm", "sip.test")
            .with_timeout(Duration::from_secs(15))
            .spawn()
            .unwrap();
        let client = Sipp::new(Scenario::Shipped(ShippedScenario::UacRegisterAuth))
            .with_remote(registrar.addr())
            .with_service("alice")
            .with_auth("alice", password)
            .with_timeout(Duration::from_secs(15))
            .run()
            .unwrap();
        let registrar = registrar.wait().unwrap();
        assert_eq!(client.is_success(), expect_success, "{}", client.report());
        assert_eq!(
            registrar.is_success(),
            expect_success,
            "{}",
            registrar.report()
        );
        if !expect_success {
            assert_eq!(client.exit_code(), Some(1), "{}", client.report());
            assert_eq!(client.stats.failed_calls, 1, "{}", client.report());
        }
    }
}

#[test]
fn a_missing_scenario_file_is_an_error() {
    let err = Sipp::new(Scenario::File("/nonexistent/scenario.xml".into()))
        .spawn()
        .unwrap_err();
    assert!(matches!(err, PeerError::MissingFile { .. }), "{err}");
}
