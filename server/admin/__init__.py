"""The admin console: HTML forms for flows, DPP templates, conversations, API tokens and the audit log.

An edge like the API and the pages: routes here call services and render templates/admin/; they never
speak SQL. `install(app)` mounts it; `console.guard` checks session, CSRF and role on every route.
"""
