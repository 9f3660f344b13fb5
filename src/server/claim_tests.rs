//! Property tests of `claim_fds`: a frame takes exactly the descriptors
//! that arrived inside its bytes, and every descriptor ends up claimed,
//! doomed (closed later) or still waiting, never lost or taken twice.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;

use proptest::prelude::*;
use ringxfer_ipc::{Request, Strategy as Xfer, SubmitRequest};

use super::wire::claim_fds;

fn job(publish: bool) -> SubmitRequest {
    SubmitRequest {
        req: 1,
        tag: String::new(),
        offset: 0,
        length: None,
        dest_offset: 0,
        strategy: Xfer::Auto,
        progress: false,
        priority: Default::default(),
        rate_limit: None,
        detach: false,
        fsync: false,
        verify: false,
        truncate: false,
        publish: publish.then(|| ringxfer_ipc::PublishTo {
            name: b"x".to_vec(),
            staged_name: None,
        }),
        reflink: Default::default(),
        rate_group: None,
        sparse: Default::default(),
    }
}

fn request(kind: u8, jobs: usize, publish: bool) -> Request {
    match kind {
        0 => Request::Stats,
        1 => Request::Submit(job(publish)),
        _ => Request::SubmitBatch((0..jobs).map(|_| job(publish)).collect()),
    }
}

fn descriptor() -> OwnedFd {
    OwnedFd::from(std::fs::File::open("/dev/null").expect("open /dev/null"))
}

// The fuzzing of the daemon's decoder (issue 15): cargo-fuzz needs a

// nightly toolchain, so these properties run with many cases in every

// test run (.ci/run included): about 4 s together in a debug build.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5_000))]

    #[test]
    fn a_frame_claims_exactly_the_descriptors_inside_it(
        mut positions in proptest::collection::vec(0u64..64, 0..8),
        (start, len) in (0u64..48, 1u64..24),
        (kind, jobs, publish) in (0u8..3, 0usize..4, any::<bool>()),
    ) {
        positions.sort_unstable();
        let end = start + len;
        let mut fds = VecDeque::new();
        for &pos in &positions {
            fds.push_back((pos, descriptor()));
        }
        let req = request(kind, jobs, publish);
        let want = match &req {
            Request::Submit(j) => j.descriptors(),
            Request::SubmitBatch(js) => js.iter().map(SubmitRequest::descriptors).sum(),
            _ => 0,
        };
        let taken: Vec<u64> = positions.iter().copied().filter(|&p| p <= end).collect();
        let stray = taken.iter().any(|&p| p <= start);
        let mut doomed = Vec::new();
        let result = claim_fds(&mut fds, &req, start, end, &mut doomed);
        let ok = taken.len() == want && !stray;
        prop_assert_eq!(result.is_ok(), ok, "taken {:?} want {} stray {}", taken, want, stray);
        let claimed = result.map_or(0, |v| v.len());
        prop_assert_eq!(claimed + doomed.len(), taken.len());
        prop_assert_eq!(fds.len(), positions.len() - taken.len());
        prop_assert!(fds.iter().all(|(p, _)| *p > end));
    }
}
