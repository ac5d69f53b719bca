-- Commerce ingestion: a batch's records (JSON) until its job has stored them, kept apart from
-- cm_batches (whose payload column stays NULL) because the job advances the batch's counters
-- once per chunk, and an UPDATE rewrites the whole row: megabytes of payload each time.
CREATE TABLE cm_batch_payloads (
    tenant_id TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    payload TEXT NOT NULL,       -- a JSON body with "data", or a JSON array of records
    PRIMARY KEY (tenant_id, batch_id)
);
