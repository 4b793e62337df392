-- depends: mirror_0003_rpc_calls
-- Usage per UTC day of the current period, for the portal's bar chart: a JSON array of
-- {"day": "YYYY-MM-DD", "value": "<decimal>"} from the meter's daily event summaries.
ALTER TABLE mirror.usage ADD COLUMN IF NOT EXISTS daily jsonb NOT NULL DEFAULT '[]'::jsonb;
