-- Subscriptions (issue 3): the tenant's metadata sent with the create
-- request, a JSON object of string → string. Same meaning as
-- ../sqlite/0002_subscription_metadata.sql.
ALTER TABLE subscriptions ADD COLUMN metadata TEXT NOT NULL DEFAULT '{}';
