-- A user's history (serving reads it for every user whose state is not in memory) comes from
-- the index alone, already in the order serving wants (newest first, id breaking ties): the
-- rows of one user are scattered over the table in arrival order, so the narrower index cost a
-- table page read per interaction (about 50 for a typical user). The reads name the index
-- (INDEXED BY): without ANALYZE the planner would rather walk rc_interactions_time to skip
-- the sort.
DROP INDEX rc_interactions_user;
CREATE INDEX rc_interactions_user ON rc_interactions(tenant_id, user_id, timestamp, id, item_id,
                                                     type, created_at);
