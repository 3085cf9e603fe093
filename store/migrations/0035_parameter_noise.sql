-- Each parameter's noise band: the change over three hours that means nothing (the instrument's
-- usual repeatability, in the canonical unit). /v1/situation calls a 3-hour trend steady while
-- its change stays within ± noise. Set by `envlink seed` from config/parameters.yaml; NULL until
-- then, which leaves no band (any change is a rise or a fall).
ALTER TABLE parameter ADD COLUMN noise double precision CHECK (noise >= 0);
