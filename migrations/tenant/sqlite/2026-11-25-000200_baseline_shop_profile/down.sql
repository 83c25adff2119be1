DROP TABLE shop_profile;
