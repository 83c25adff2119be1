DROP TABLE reminder_log;
