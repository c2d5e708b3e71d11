-- One row: the weekly schedule of the transfer limits, shared by every raw
-- server. `windows` is a JSON list of {"days": ["mon", ...], "start": "08:00",
-- "end": "20:00", "max_in_flight"?: n, "studies_per_second"?: r}, local times
-- in `time_zone` (an IANA name); outside every window transfer_controls apply.
-- Validated by orthanc_plugins/raw/schedules.py before it is stored.
CREATE TABLE transfer_schedule (
    id          boolean     PRIMARY KEY DEFAULT true CHECK (id),
    time_zone   text        NOT NULL,
    windows     jsonb       NOT NULL DEFAULT '[]'::jsonb,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
