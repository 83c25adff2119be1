ALTER TABLE shop_profile DROP COLUMN watermark_path;
ALTER TABLE shop_profile DROP COLUMN signature_blob;
ALTER TABLE shop_profile DROP COLUMN invoice_prefix;
ALTER TABLE shop_profile DROP COLUMN secondary_colour;
ALTER TABLE shop_profile DROP COLUMN primary_colour;
ALTER TABLE shop_profile DROP COLUMN logo_path;
