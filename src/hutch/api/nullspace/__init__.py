"""The Nullspace dialect, mounted at ``/nullspace`` (seed 004): plain JSON, Bearer auth,
errors as ``{"error": {"code", "message", "request_id"}}``."""

from fastapi import APIRouter

from hutch.api.nullspace import sandboxes

__all__ = ["router"]

router = APIRouter(prefix="/nullspace")
router.include_router(sandboxes.router)
