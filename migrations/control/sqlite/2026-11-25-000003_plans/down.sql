DROP INDEX tenants_trial_ends_at_idx;
DROP INDEX tenants_plan_id_idx;
DROP TABLE change_counter;
DROP TABLE feature_overrides;
DROP TABLE plan_features;
DROP TABLE plans;
