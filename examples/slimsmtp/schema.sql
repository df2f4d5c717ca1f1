-- The mailbox table of a SlimSMTP-style setup, as its admins keep it:
--   account_backend 'PAM'     the mailbox is the system user's ~/Maildir
--   account_backend '@NAME'   the address is a shared mailbox NAME
--   domain '@NAME', 'ALIAS'   the mailbox (a system user) is a member of NAME
CREATE TABLE IF NOT EXISTS smtp (id bigserial PRIMARY KEY,
    mailbox varchar(255), domain varchar(255), account_backend varchar(20),
    UNIQUE (mailbox, domain));
INSERT INTO smtp (mailbox, domain, account_backend) VALUES
    ('anton', 'example.com', 'PAM'),
    ('anton', '@SOCIAL', 'ALIAS'),
    ('facebook', 'example.com', '@SOCIAL'),
    ('twitter', 'example.com', '@SOCIAL');
GRANT SELECT ON smtp TO postern;
