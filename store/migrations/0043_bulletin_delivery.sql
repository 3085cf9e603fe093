-- Delivering the monthly bulletin through the outbox: a notification of kind 'bulletin' names
-- the stored version it delivers; each bulletin subscription is sent each version once.
ALTER TABLE notification DROP CONSTRAINT notification_kind_check;
ALTER TABLE notification ADD CONSTRAINT notification_kind_check
    CHECK (kind IN ('firing', 'update', 'repeat', 'resolved', 'retracted', 'escalation',
                    'bulletin'));
ALTER TABLE notification ADD COLUMN bulletin_id bigint REFERENCES bulletin ON DELETE CASCADE;
ALTER TABLE notification ADD CONSTRAINT notification_bulletin_has_version
    CHECK ((kind = 'bulletin') = (bulletin_id IS NOT NULL));
CREATE UNIQUE INDEX notification_bulletin_once ON notification (subscription_id, bulletin_id)
    WHERE bulletin_id IS NOT NULL;
