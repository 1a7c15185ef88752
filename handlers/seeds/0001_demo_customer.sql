-- Development data for the example app, applied by `inbox dev` at every start (never by
-- `inbox migrate`, so a production deploy gets no demo user). Seeds run again each time:
-- keep them idempotent.
--
-- The customer of the Stripe fixture story (`inbox send-test-event --all`): the example
-- handlers only know customers who signed up, so without this user the story's invoice and
-- subscription events are retried, then dead.
INSERT INTO app_users (email, stripe_customer_id)
VALUES ('jenny@example.com', 'cus_QXg1o8vcGmoR32')
ON CONFLICT DO NOTHING;
