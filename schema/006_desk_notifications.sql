-- desk: in-app notifications (assignment, comments, status, approvals, SLA breaches).
CREATE TABLE notifications (
    tenant_id   TEXT NOT NULL,
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id),
    kind        TEXT NOT NULL CHECK (kind IN ('ticket_assigned','ticket_comment','ticket_status',
                                              'approval_requested','approval_decided','sla_breach',
                                              'deployment')),
    title       TEXT NOT NULL,
    message     TEXT NOT NULL,
    ticket_id   TEXT,
    read_at     INTEGER,
    created_at  INTEGER NOT NULL
);
CREATE INDEX notifications_user ON notifications(tenant_id, user_id, created_at);
CREATE INDEX notifications_unread ON notifications(tenant_id, user_id, read_at);
