//! Batching properties: the token limit always holds and every example is used once per epoch.

use proptest::prelude::*;
use rosetta_text::batch::{Batch, BatchPlanner};
use rosetta_text::encoded::ParallelIds;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn batches_respect_the_limit_and_cover_every_example_once(
        lens in prop::collection::vec((1u32..120, 1u32..120), 0..400),
        extra in 0usize..2000,
        seed in any::<u64>(),
        epoch in 0u64..5,
    ) {
        let (src, tgt): (Vec<u32>, Vec<u32>) = lens.iter().copied().unzip();
        let longest = lens.iter().map(|&(s, t)| s.max(t) as usize).max().unwrap_or(1);
        let max_tokens = longest + extra;
        let planner = BatchPlanner::new(src, tgt, max_tokens).unwrap();
        let plan = planner.epoch(seed, epoch);
        let mut seen = vec![0u32; lens.len()];
        for batch in &plan {
            prop_assert!(!batch.is_empty());
            prop_assert!(planner.cost(batch) <= max_tokens, "cost {} > {}", planner.cost(batch), max_tokens);
            for &i in batch {
                seen[i as usize] += 1;
            }
        }
        prop_assert!(seen.iter().all(|&n| n == 1));
    }

    #[test]
    fn materialized_batches_match_the_planned_cost(
        seqs in prop::collection::vec((prop::collection::vec(4u32..100, 0..30), prop::collection::vec(4u32..100, 0..30)), 1..60),
        seed in any::<u64>(),
    ) {
        let mut data = ParallelIds::new();
        for (s, t) in &seqs {
            data.push(s, t);
        }
        let (src, tgt) = data.batch_lengths();
        let planner = BatchPlanner::new(src, tgt, 64).unwrap();
        for indices in planner.epoch(seed, 0) {
            let batch = Batch::new(&data, &indices, (&Default::default(), &Default::default()));
            prop_assert!(batch.src.batch * batch.src.len <= 64);
            prop_assert!(batch.tgt_in.batch * batch.tgt_in.len <= 64);
            prop_assert_eq!(batch.tgt_in.len, batch.tgt_out.len);
            prop_assert_eq!(batch.src.mask().iter().filter(|&&m| m).count(), batch.src.real_tokens());
        }
    }
}
