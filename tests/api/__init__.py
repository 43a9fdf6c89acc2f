"""Read-API tests (marker ``api``): the FastAPI app through TestClient over a real store."""
