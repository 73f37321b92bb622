//! Pipeline runs and the pipeline lease: steps recorded and found in the step cache, runs
//! closed when their scheduler stopped, one lease holder at a time.

use lodestar_store::Store;

use crate::TestDb;

pub(crate) async fn runs_record_steps_and_find_cached_ones(db: TestDb) {
    let s = &db.store;
    let new = lodestar_store::NewRun {
        trigger: "cron",
        scheduled_for: Some("2026-11-28T02:00:00Z"),
        ..Default::default()
    };
    let run = s.start_run(&new).await.unwrap().unwrap();
    // The same cron slot is served once, whoever asks.
    assert_eq!(s.start_run(&new).await.unwrap(), None);
    assert_eq!(
        s.latest_scheduled_slot().await.unwrap().as_deref(),
        Some("2026-11-28T02:00:00Z")
    );
    let ingest = s.start_step(run, "ingest", 1, Some("in-1")).await.unwrap();
    let output = serde_json::json!({"snapshot": "abc"});
    s.finish_step(ingest, "succeeded", Some(&output), Some("out-1"), None)
        .await
        .unwrap();
    let train = s.start_step(run, "train", 1, Some("in-2")).await.unwrap();
    s.finish_step(train, "failed", None, None, Some("out of memory"))
        .await
        .unwrap();
    s.finish_run(
        run,
        "failed",
        Some("train failed"),
        false,
        &serde_json::json!({"steps": 2}),
    )
    .await
    .unwrap();
    let r = s.run(run).await.unwrap().unwrap();
    assert_eq!(
        (r.status.as_str(), r.error.as_deref()),
        ("failed", Some("train failed"))
    );
    assert!(r.finished_at.is_some());
    let steps = s.steps(run).await.unwrap();
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[1].error.as_deref(), Some("out of memory"));
    // A rerun finds the finished ingest (same inputs) but not the failed training.
    let cached = s.cached_step("ingest", "in-1").await.unwrap().unwrap();
    assert_eq!(cached.output_hash.as_deref(), Some("out-1"));
    assert_eq!(cached.output, Some(output));
    assert!(s.cached_step("train", "in-2").await.unwrap().is_none());
    assert!(s.cached_step("ingest", "other").await.unwrap().is_none());
}

pub(crate) async fn the_pipeline_lease_admits_one_holder(db: TestDb) {
    let s = &db.store;
    let holder = |pid: i64| lodestar_store::LeaseHolder {
        id: format!("here:{pid}"),
        host: "here".into(),
        pid,
    };
    let long_ago = "2000-01-01T00:00:00.000Z";
    let alive = |_: i64| true;
    let first = s.try_lease(&holder(1), long_ago, &alive).await.unwrap();
    let first = first.expect("a free lease is taken");
    assert!(
        s.try_lease(&holder(2), long_ago, &alive)
            .await
            .unwrap()
            .is_none(),
        "a second scheduler must wait"
    );
    // A second pool (another replica) is refused too.
    let other = Store::connect(&db.url).await.unwrap();
    assert!(
        other
            .try_lease(&holder(3), long_ago, &alive)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        s.lease_record().await.unwrap().holder.as_deref(),
        Some("here:1")
    );
    first.heartbeat().await.unwrap();
    first.release().await.unwrap();
    let second = other.try_lease(&holder(3), long_ago, &alive).await.unwrap();
    let second = second.expect("a released lease is free");
    if s.backend() == lodestar_store::Backend::Sqlite {
        // The holder's process on this host is gone: the lease is taken over.
        let dead = |pid: i64| pid != 3;
        let taken = s.try_lease(&holder(4), long_ago, &dead).await.unwrap();
        assert!(taken.is_some(), "a dead holder's lease is taken over");
        taken.unwrap().release().await.unwrap();
        drop(second);
    } else {
        // The holder's connection closes (its process died): the advisory lock goes with it.
        drop(second);
        let mut taken = None;
        for _ in 0..50 {
            taken = s.try_lease(&holder(4), long_ago, &alive).await.unwrap();
            if taken.is_some() {
                break;
            }
            tokio::task::yield_now().await;
        }
        taken
            .expect("the lock of a closed connection is free")
            .release()
            .await
            .unwrap();
    }
    // Runs left running by a holder that died are closed by the next one.
    let run = s
        .start_run(&lodestar_store::NewRun {
            trigger: "cli",
            ..Default::default()
        })
        .await
        .unwrap()
        .unwrap();
    s.start_step(run, "train", 1, None).await.unwrap();
    assert_eq!(s.close_interrupted_runs("here:5").await.unwrap(), 1);
    let r = s.run(run).await.unwrap().unwrap();
    assert_eq!(r.status, "failed");
    assert!(r.error.unwrap().contains("interrupted"));
    assert_eq!(s.steps(run).await.unwrap()[0].status, "failed");
}
