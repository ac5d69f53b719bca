"""The peer for tools/bench/auth: GET /api/v1/users/me in FastAPI + uvicorn + sqlite3 + PyJWT,
written the way such a service usually is (verify an HS256 token, read one user row)."""
import os
import sqlite3
import threading

import jwt
from fastapi import FastAPI, Header, HTTPException

DB = os.environ["PEER_DB"]
KEY = bytes.fromhex(open(os.environ["PEER_SECRET"]).read().strip())
app = FastAPI()
local = threading.local()


def db():
    if not hasattr(local, "conn"):
        local.conn = sqlite3.connect(f"file:{DB}?mode=ro", uri=True, check_same_thread=False)
    return local.conn


@app.get("/api/v1/users/me")
def users_me(authorization: str = Header(None)):
    if not authorization or not authorization.startswith("Bearer "):
        raise HTTPException(401, "no credential")
    try:
        claims = jwt.decode(authorization[7:], KEY, algorithms=["HS256"])
    except jwt.PyJWTError:
        raise HTTPException(401, "invalid token")
    row = db().execute("SELECT id, email, name, roles FROM users WHERE id = ? AND tenant_id = ?",
                       (claims["sub"], claims["tid"])).fetchone()
    if row is None:
        raise HTTPException(404, "not found")
    return {"id": row[0], "email": row[1], "full_name": row[2], "role": "viewer"}
