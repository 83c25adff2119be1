-- Phase 1 / branding: branding artefacts live on the shop (not on each sale),
-- so every receipt/invoice of the shop renders with them. Paths are relative
-- to the tenant's file storage; colours are CSS hex strings such as '#1a2b3c';
-- invoice_prefix is prepended to sales.invoice_number when printed.
ALTER TABLE shop_profile ADD COLUMN logo_path TEXT;
ALTER TABLE shop_profile ADD COLUMN primary_colour TEXT;
ALTER TABLE shop_profile ADD COLUMN secondary_colour TEXT;
ALTER TABLE shop_profile ADD COLUMN invoice_prefix TEXT;
ALTER TABLE shop_profile ADD COLUMN signature_blob BYTEA;
ALTER TABLE shop_profile ADD COLUMN watermark_path TEXT;
