//! The periodic task and the check-sync trigger, against the real server.

use std::time::Duration;

use provisioning::{Outcome, ProvisionError, Provisioner};
use testkit::Resource;
use tokio::sync::mpsc;

use crate::{Fixture, document};

async fn next(results: &mut mpsc::UnboundedReceiver<Result<Outcome, String>>) -> Outcome {
    tokio::time::timeout(Duration::from_secs(20), results.recv())
        .await
        .expect("a check within 20 s")
        .expect("the task is running")
        .expect("the check succeeds")
}

#[tokio::test]
async fn run_periodic_checks_at_once_and_again_on_check_sync() {
    let f = Fixture::new();
    f.serve(
        "/a.xml",
        Resource::document(document("v1")).with_etag("\"1\""),
    );
    let provisioner = Provisioner::new(f.profile(), f.settings("/a.xml")).unwrap();
    let trigger = provisioner.trigger();
    let (tx, mut results) = mpsc::unbounded_channel();
    let task = tokio::spawn({
        let provisioner = provisioner.clone();
        async move {
            provisioner
                .run_periodic(move |result: &Result<Outcome, ProvisionError>| {
                    let _ = tx.send(match result {
                        Ok(outcome) => Ok(outcome.clone()),
                        Err(error) => Err(error.to_string()),
                    });
                })
                .await;
        }
    });

    let first = next(&mut results).await;
    assert_eq!(first.config.accounts[0].user, "v1");
    assert_eq!(first.check_interval, provisioning::DEFAULT_CHECK_INTERVAL);

    // Nothing else happens until asked: the interval is a day.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), results.recv())
            .await
            .is_err()
    );
    assert_eq!(f.server.requests().len(), 1);

    // The PBX changed the document and sent NOTIFY Event: check-sync.
    f.serve(
        "/a.xml",
        Resource::document(document("v2")).with_etag("\"2\""),
    );
    trigger.check_sync();
    let second = next(&mut results).await;
    assert!(second.changed);
    assert_eq!(second.config.accounts[0].user, "v2");
    let request = f.server.requests()[1].clone();
    assert_eq!(request.header("If-None-Match"), Some("\"1\""));
    assert_eq!(f.store().load().unwrap().unwrap().accounts[0].user, "v2");

    task.abort();
}
