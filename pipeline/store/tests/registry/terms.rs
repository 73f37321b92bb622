//! Each presentation's term as recorded from the latest export: running first, then kept.

use lodestar_domain::{AsOfSource, AsOfWeek, TermState};
use lodestar_store::StoreError;

use crate::{TestDb, term};

pub(crate) async fn terms_are_recorded_running_first_and_kept(db: TestDb) {
    let s = &db.store;
    assert!(s.terms().await.unwrap().is_empty());
    assert_eq!(s.term("BBB", "2014J").await.unwrap(), None);
    let mut running = term("BBB-2014J", TermState::Running, 76);
    running.start_date = Some("2014-10-04".into());
    running.as_of_source = AsOfSource::Configured;
    let finished = term("BBB-2013J", TermState::Finished, 268);
    let early = term("AAA-2014J", TermState::Running, 3);
    s.record_terms(
        &[finished.clone(), running.clone(), early.clone()],
        "snap-1",
    )
    .await
    .unwrap();
    let all = s.terms().await.unwrap();
    assert_eq!(
        all.iter()
            .map(|t| t.presentation.as_str())
            .collect::<Vec<_>>(),
        ["AAA-2014J", "BBB-2014J", "BBB-2013J"],
        "running first, then by presentation"
    );
    assert_eq!(all[1], running, "every field round-trips");
    assert_eq!(all[0].current_week, None, "no week complete before day 6");
    assert_eq!(all[2], finished);
    assert_eq!(
        s.term("BBB", "2014J").await.unwrap().unwrap().describe(),
        "running, as of 19 Dec 2014, week 10 of 39"
    );
    // The next night: BBB-2014J moves on a week, AAA-2014J is no longer exported (kept as it
    // was), BBB-2014B appears; one transaction, an upsert.
    let mut later = running.clone();
    later.as_of_day = 83;
    later.current_week = AsOfWeek::completed_by(83);
    later.outcomes_known = 5;
    let b = term("BBB-2014B", TermState::Finished, 268);
    s.record_terms(&[later.clone(), b.clone()], "snap-2")
        .await
        .unwrap();
    assert_eq!(s.term("BBB", "2014J").await.unwrap(), Some(later.clone()));
    assert_eq!(s.term("AAA", "2014J").await.unwrap(), Some(early));
    assert_eq!(s.terms().await.unwrap().len(), 4);
    // The term ends: it is finished from then on.
    let mut ended = later;
    ended.state = TermState::Finished;
    ended.as_of_source = AsOfSource::Finished;
    ended.outcomes_known = ended.students;
    s.record_terms(std::slice::from_ref(&ended), "snap-3")
        .await
        .unwrap();
    let all = s.terms().await.unwrap();
    assert_eq!(all[0].presentation, "AAA-2014J");
    assert_eq!(
        all.iter().filter(|t| t.state == TermState::Running).count(),
        1
    );
    assert_eq!(s.term("BBB", "2014J").await.unwrap(), Some(ended));
    // A presentation id that is not MODULE-PRESENTATION is refused and nothing of the batch
    // is written.
    let new_one = term("CCC-2014J", TermState::Running, 10);
    let bad = term("nodash", TermState::Running, 10);
    let err = s.record_terms(&[new_one, bad], "snap-4").await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    assert_eq!(s.term("CCC", "2014J").await.unwrap(), None);
}
