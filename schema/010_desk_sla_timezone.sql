-- desk SLA: an IANA time zone for the business calendar (e.g. 'Europe/Berlin'), read from the
-- system tzdata with its daylight-saving transitions. NULL: the fixed utc_offset_minutes.
ALTER TABLE sla_calendars ADD COLUMN timezone TEXT CHECK (timezone IS NULL OR length(timezone) BETWEEN 1 AND 64);
