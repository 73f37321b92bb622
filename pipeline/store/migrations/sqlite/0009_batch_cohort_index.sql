-- Tonight's rows go into one index fewer: the presentation-and-week index now leads with the
-- row's batch, and takes the place of the batch index. A night's rows then land in their own
-- part of the index, beside each other, instead of among every earlier night's, and each staged
-- row updates three indexes instead of four. Readers find a presentation's week through the
-- published batches (the view's list of them), the index read once for each; rows stored before
-- batches (batch NULL) sort first in the same index.
DROP INDEX predictions_cohort;
DROP INDEX prediction_rows_batch;
CREATE INDEX prediction_rows_batch_cohort
    ON prediction_rows (batch_id, code_module, code_presentation, as_of_week);
