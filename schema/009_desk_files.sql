-- desk files: uploaded attachments; the bytes live in DATA/files/<id>, named by this row only.
CREATE TABLE desk_files (
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    id           TEXT PRIMARY KEY,                       -- also the file's name on disk
    ticket_id    TEXT REFERENCES tickets(id) ON DELETE SET NULL,  -- NULL: not attached
    uploaded_by  TEXT NOT NULL REFERENCES users(id),
    filename     TEXT NOT NULL CHECK (length(CAST(filename AS BLOB)) BETWEEN 1 AND 255),
    content_type TEXT NOT NULL,                          -- detected from the bytes
    size         INTEGER NOT NULL CHECK (size >= 0),
    sha256       TEXT NOT NULL CHECK (length(sha256) = 64),
    created_at   INTEGER NOT NULL
);
CREATE INDEX desk_files_ticket ON desk_files(tenant_id, ticket_id, created_at) WHERE ticket_id IS NOT NULL;
CREATE INDEX desk_files_uploader ON desk_files(tenant_id, uploaded_by, created_at);
