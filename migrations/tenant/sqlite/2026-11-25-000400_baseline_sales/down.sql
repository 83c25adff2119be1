DROP TABLE sales;
