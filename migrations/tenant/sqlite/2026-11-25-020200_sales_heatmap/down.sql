DROP VIEW sales_heatmap;
