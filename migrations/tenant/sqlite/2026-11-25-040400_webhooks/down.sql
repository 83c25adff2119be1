DROP TABLE webhook_events;
DROP TABLE api_webhooks;
