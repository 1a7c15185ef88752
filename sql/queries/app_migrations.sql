-- name: app_migrations_applied
-- Migrations of one handler package already applied (table made by 0002_worker.sql).
SELECT name FROM inbox_app_migrations WHERE module = %(module)s ORDER BY name;

-- name: app_migrations_record
INSERT INTO inbox_app_migrations (module, name) VALUES (%(module)s, %(name)s);
