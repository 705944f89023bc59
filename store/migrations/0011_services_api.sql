-- Services through the API (issue 9, item 5): who may manage a partner, and which users
-- act for one.
--
-- Partners form one marketplace across tenants (a fleet of any tenant books any active
-- shop), but managing a partner — onboarding, prices, payouts — belongs to the tenant
-- that operates it; another tenant's admin must see a non-active partner as nonexistent.
-- Null: created outside the API (tests, imports); only visible once active.
ALTER TABLE partners ADD COLUMN tenant_id bigint REFERENCES tenants (id) ON DELETE RESTRICT;
CREATE INDEX partners_tenant_idx ON partners (tenant_id);

-- A user with the `partner` role acts for exactly one partner: sees and moves that
-- partner's bookings, keeps its catalogue, hours and inventory. No row: the user acts
-- for no partner and sees none of them beyond the public marketplace.
CREATE TABLE partner_users (
    user_id     bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    partner_id  bigint NOT NULL REFERENCES partners (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX partner_users_partner_idx ON partner_users (partner_id);
